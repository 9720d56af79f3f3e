"""Running the simulator: in the foreground until a signal, or in a background thread.

``serve`` is what ``python -m flowcloud.simulator`` and the flowcloud CLI call.
``start_in_thread`` gives in-process users (the embedded default provider,
tests) a running server they can stop. Both share ``_run_until``, which owns
the socket: a deep listen backlog and no access log unless asked, so
thousands of concurrent slow requests are accepted and cost little CPU.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping

from aiohttp import web

from .server import make_app
from .settings import Settings

BACKLOG = 4096
# Requests held by a slow fault must not hold up shutdown for long.
SHUTDOWN_TIMEOUT = 1.0
START_TIMEOUT = 10.0

log = logging.getLogger(__name__)


def listening_line(host: str, port: int) -> str:
    """The line a parent process waits for before talking to the simulator."""
    return f"simulator listening on http://{host}:{port}/v1"


async def _run_until(settings: Settings, host: str, port: int, stop: asyncio.Event,
                     ready: Callable[[int], None]) -> None:
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.AppRunner(make_app(settings), handle_signals=False, access_log=access_log,
                           shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=BACKLOG)
        await site.start()
        ready(runner.addresses[0][1])
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(host: str = "127.0.0.1", port: int = 8400, latency: float = 0.0, jitter: float = 0.0,
          fault_rates: str | Mapping[str, float] | None = None, api_key: str | None = None,
          seed: int | None = None, access_log: bool = False,
          ready: Callable[[int], None] | None = None) -> None:
    """Run the simulator until SIGINT or SIGTERM, then return.

    ``ready`` receives the bound port once the server accepts connections
    (``port=0`` picks a free one); without it the listening line is printed
    to stdout. Bad values raise ``ConfigError`` before anything listens.
    """
    settings = Settings.build(latency=latency, jitter=jitter, fault_rates=fault_rates,
                              api_key=api_key, seed=seed, access_log=access_log)
    if access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if ready is None:
        def ready(bound: int) -> None:
            print(listening_line(host, bound), flush=True)
    asyncio.run(_serve_until_signal(settings, host, port, ready))


async def _serve_until_signal(settings: Settings, host: str, port: int,
                              ready: Callable[[int], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread, or no signal support: stopped by cancellation instead.
            log.debug("cannot handle signal %s here", signum)
    await _run_until(settings, host, port, stop, ready)


class BackgroundSimulator:
    """A simulator running on its own event loop in a daemon thread.

    Use as a context manager or call ``stop()``; ``url`` is the OpenAI base URL.
    """

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings, self.host, self.port = settings, host, port
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="flowcloud-simulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> BackgroundSimulator:
        """Start serving and wait until the port is bound; a second call does nothing."""
        if not self._thread.is_alive() and not self._started.is_set():
            self._thread.start()
            if not self._started.wait(START_TIMEOUT):
                raise RuntimeError(f"simulator did not start within {START_TIMEOUT} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to finish."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)

    def __enter__(self) -> BackgroundSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the thread that called start()
            self._error = exc
            self._started.set()

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

        def ready(port: int) -> None:
            self.port = port
            self._started.set()

        await _run_until(self.settings, self.host, self.port, self._stop, ready)


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **options: object) -> BackgroundSimulator:
    """Start a simulator in a background thread; ``options`` as for ``Settings.build``."""
    return BackgroundSimulator(Settings.build(**options), host, port).start()  # type: ignore[arg-type]
