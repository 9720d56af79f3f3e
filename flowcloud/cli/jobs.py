"""Job commands: ``submit``, ``status``, ``result``, ``cancel``. They use only the light client; ``status``
without a job reads the routed deployments' shared state (``flowcloud.cli.fleet``)."""

from __future__ import annotations

import click

from flowcloud.cli.render import console, echo_json, record_table

WAIT_FOREVER = None


def show(record: dict, as_json: bool) -> None:
    if as_json:
        echo_json(record)
    else:
        console().print(record_table(record))


def exit_code(record: dict) -> int:
    return 0 if record["status"] != "failed" else 3


@click.command()
@click.argument("text")
@click.option("--model", "-m", help="model name from the configuration (default: default_model)")
@click.option("--flow", help="flow name the cost is booked to")
@click.option("--system", help="a system prompt to send before TEXT")
@click.option("--max-tokens", type=click.IntRange(min=1), help="upper bound on the answer's length")
@click.option("--temperature", type=click.FloatRange(0, 2), help="sampling temperature")
@click.option("--wait", "-w", is_flag=True, help="wait for the result instead of printing the job id")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="seconds to wait (default: no limit)")
@click.option("--no-cache", is_flag=True, help="call the provider even if an identical request was answered")
@click.option("--priority", type=click.IntRange(0, 9), default=5, show_default=True,
              help="in degraded mode, jobs below alerts.degraded.refuse_priority_below are refused")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def submit(text, model, flow, system, max_tokens, temperature, wait, timeout, no_cache, priority, as_json) -> None:
    """Queue TEXT as a completion job and print its id (or, with --wait, its result).

    Exit status with --wait: 0 succeeded, 3 failed, 1 timed out or could not submit.
    """
    from flowcloud import client

    options = {"temperature": temperature} if temperature is not None else {}
    job_id = client.submit(text, model=model, flow=flow, system=system, max_tokens=max_tokens,
                           cache=not no_cache, priority=priority, **options)
    if not wait:
        echo_json({"job_id": job_id}) if as_json else click.echo(job_id)
        return
    record = client.result(job_id, timeout=timeout)
    show(record, as_json)
    raise SystemExit(exit_code(record))


@click.command()
@click.argument("job_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def status(job_id: str | None, as_json: bool) -> None:
    """Show a job's current state without waiting; without JOB_ID, the circuit, latency and calls in
    flight of every routed deployment, as all workers share them."""
    if job_id is None:
        show_fleet(as_json)
        return
    from flowcloud import client

    show(client.status(job_id), as_json)


def show_fleet(as_json: bool) -> None:
    from flowcloud.cli.fleet import deployment_states, fleet_json, fleet_table
    from flowcloud.workers.core.config import get_config

    states = deployment_states(get_config())
    if as_json:
        echo_json(fleet_json(states))
    elif not states:
        click.echo("no model group routes between deployments (see model_groups in the configuration)")
    else:
        console().print(fleet_table(states))


@click.command()
@click.argument("job_id")
@click.option("--wait", "-w", is_flag=True, help="wait until the job finishes")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="seconds to wait (default: no limit)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def result(job_id: str, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Show a job's result record; with --wait, wait for it to finish first.

    Exit status: 0 succeeded, 3 failed, 4 not finished yet (without --wait), 1 timed out.
    """
    from flowcloud import client
    from flowcloud.workers.core.records import JobStatus

    record = client.result(job_id, timeout=timeout) if wait else client.status(job_id)
    show(record, as_json)
    if not JobStatus(record["status"]).finished:
        raise SystemExit(4)
    raise SystemExit(exit_code(record))


@click.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job that has not finished yet."""
    from flowcloud import client

    if client.cancel(job_id):
        click.echo(f"cancelled {job_id}")
    else:
        click.echo(f"{job_id} had already finished; nothing to cancel")


def register(cli: click.Group) -> None:
    for command in (submit, status, result, cancel):
        cli.add_command(command)
