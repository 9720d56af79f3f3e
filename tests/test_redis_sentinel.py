"""A Sentinel group as redis_url: the URL's form and its errors, the settings each library gets, and
every client flowcloud opens (its own, kombu's, the result backend's, RedBeat's, Flower's) reaching
the primary of a real group (tests/faults/test_sentinel_failover.py kills it)."""

from __future__ import annotations

import asyncio

import pytest

from flowcloud.workers.core import redis_sentinel
from flowcloud.workers.core.celery_app import beat_settings, celery_settings, create_app
from flowcloud.workers.core.config import load_config
from flowcloud.workers.core.errors import BrokerUnavailable
from flowcloud.workers.core.redis_conn import check_url, connect, display_url
from tests.conftest import config_yaml
from tests.faults.sentinels import MASTER, PASSWORD, SentinelGroup, require_redis_server

URL = "sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380,10.0.0.3/cache/2"


@pytest.mark.parametrize("url, group", [
    (URL, redis_sentinel.SentinelGroup(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)), "cache", 2, None, "s3cret")),
    ("sentinel://h:1/mymaster", redis_sentinel.SentinelGroup((("h", 1),), "mymaster")),
    ("sentinel://app:p%40ss@h:1/mymaster/0", redis_sentinel.SentinelGroup((("h", 1),), "mymaster", 0, "app", "p@ss")),
])
def test_the_url_names_the_sentinels_the_master_and_the_database(url, group):
    assert redis_sentinel.parse(url) == group
    check_url(url)


@pytest.mark.parametrize("url, complaint", [
    ("sentinel://:s3cret@h:1", "a Sentinel URL is sentinel://"),
    ("sentinel://:s3cret@h:1/mymaster/0/extra", "a Sentinel URL is sentinel://"),
    ("sentinel://:s3cret@h:port/mymaster", "'h:port' is no sentinel address"),
    ("sentinel://:s3cret@h:1/mymaster/zero", "database 'zero' must be a number"),
    ("sentinel://:s3cret@h:1/mymaster?ssl_cert_reqs=none", "ssl_cert_reqs: flowcloud reaches a Sentinel group without TLS"),
    ("sentinal://:s3cret@h:1/mymaster", "use redis://, rediss:// .*sentinel://"),
])
def test_a_bad_sentinel_url_is_refused_naming_no_password(url, complaint):
    with pytest.raises(ValueError, match=complaint) as refused:
        check_url(url)
    assert "s3cret" not in str(refused.value)


def test_the_password_is_hidden_where_the_url_is_shown():
    assert display_url(URL) == "sentinel://:***@10.0.0.1:26379,10.0.0.2:26380,10.0.0.3/cache/2"


def test_celery_gets_the_group_in_kombus_spelling_with_the_master_in_its_transport_options():
    settings = celery_settings(load_config({"FLOWCLOUD_REDIS_URL": URL}))
    each = ["10.0.0.1:26379", "10.0.0.2:26380", "10.0.0.3:26379"]
    assert settings["broker_url"] == settings["result_backend"] == ";".join(
        f"sentinel://:s3cret@{address}/2" for address in each)
    for options in (settings["broker_transport_options"], settings["result_backend_transport_options"]):
        assert options["master_name"] == "cache"
        assert options["visibility_timeout"] == 3600


def test_beat_keeps_the_group_for_its_scheduler_and_shows_no_password():
    settings = beat_settings(load_config({"FLOWCLOUD_REDIS_URL": URL}))
    assert settings["flowcloud_redis_url"] == URL
    # What RedBeat shows at start: the sentinels, no password.
    assert settings["redbeat_redis_url"] == "sentinel://10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2;sentinel://10.0.0.3:26379/2"


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    require_redis_server()
    started = SentinelGroup(tmp_path_factory.mktemp("sentinel")).start()
    yield started
    started.stop()


@pytest.fixture
def app_config(group, simulator, tmp_path):
    path = tmp_path / "flowcloud.yaml"
    path.write_text(config_yaml(group.url, simulator.url))
    return load_config({"FLOWCLOUD_CONFIG": str(path)})


def test_flowclouds_own_client_reaches_the_primary(group):
    client = connect(group.url)
    client.set("sentinel-probe", "1")
    assert group.primary.client().get("sentinel-probe") == b"1"
    assert client.connection_pool.master_address == ("127.0.0.1", group.primary.port)


def test_a_master_name_no_sentinel_knows_is_said_at_once(group):
    wrong = group.url.replace(f"/{MASTER}/", "/nosuchmaster/")
    with pytest.raises(BrokerUnavailable, match="no sentinel of sentinel://:\\*\\*\\*@.* named a primary") as failed:
        connect(wrong)
    assert PASSWORD not in str(failed.value)


def test_kombu_the_result_backend_redbeat_and_flower_reach_the_primary(group, app_config):
    from flower.utils.broker import Broker
    from redbeat.schedulers import get_redis

    from flowcloud.beat.scheduler import LeasedScheduler

    app = create_app(app_config, **beat_settings(app_config))
    LeasedScheduler(app=app, lazy=True)  # hands RedBeat flowcloud's client of the group
    assert get_redis(app) is connect(group.url)
    with app.connection_for_write() as connection:
        connection.default_channel.client.lpush("sentinel-queue", "m")
    app.backend.set("sentinel-result", "r")
    get_redis(app).set("sentinel-beat", "b")
    primary = group.primary.client()
    assert (primary.llen("sentinel-queue"), primary.get("sentinel-result"), primary.get("sentinel-beat")) == (
        1, b"r", b"b")
    with app.connection() as connection:
        uri = connection.as_uri(include_password=True)
    flower = Broker(uri, broker_options=app.conf.broker_transport_options, broker_use_ssl=None)
    assert asyncio.run(flower.queues(["sentinel-queue"])) == [{"name": "sentinel-queue", "messages": 1}]


def test_with_rabbitmq_as_broker_only_the_result_backend_asks_the_sentinels():
    settings = celery_settings(load_config({"FLOWCLOUD_REDIS_URL": URL,
                                            "FLOWCLOUD_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"}))
    assert settings["broker_url"].startswith("amqp://")
    assert "master_name" not in settings["broker_transport_options"]
    assert settings["result_backend"].startswith("sentinel://:s3cret@10.0.0.1:26379/2;")
    assert settings["result_backend_transport_options"]["master_name"] == "cache"
