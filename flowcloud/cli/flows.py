"""Langflow commands: ``flow run`` (a whole flow as a background job) and ``langflow`` (a server with our nodes)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from flowcloud.cli.jobs import exit_code, show

LANGFLOW_INSTALL_HINT = (
    "Langflow is not installed here. Install it beside flowcloud from the pinned set, e.g. "
    "`uv pip install -c requirements.lock langflow==1.13.0`, or pass --langflow-bin PATH"
)


def components_path() -> Path:
    """The folder to give Langflow as LANGFLOW_COMPONENTS_PATH (its `flowcloud` sub-folder is the category)."""
    from flowcloud import flows

    return Path(flows.__file__).resolve().parent / "components"


@click.group("flow")
def flow_group() -> None:
    """Run whole Langflow flows on the flow workers."""


@flow_group.command("run")
@click.argument("flow_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("input_value", default="")
@click.option("--name", help="flow name for cost attribution (default: the flow's own name)")
@click.option("--wait", "-w", is_flag=True, help="wait for the flow's output instead of printing the job id")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="seconds to wait (default: no limit)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def run(flow_file: Path, input_value: str, name: str | None, wait: bool, timeout: float | None,
        as_json: bool) -> None:
    """Submit FLOW_FILE (a Langflow flow JSON) with INPUT_VALUE as a background job.

    A flow worker (`flowcloud worker --flows`) runs it with lfx; the result
    record's text is the flow's chat output.
    """
    from flowcloud import client

    job_id = client.submit_flow(flow_file, input_value, flow_name=name)
    if not wait:
        click.echo(job_id)
        return
    record = client.result(job_id, timeout=timeout)
    show(record, as_json)
    raise SystemExit(exit_code(record))


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7860, show_default=True, type=int)
@click.option("--langflow-bin", help="the langflow executable (default: found beside this Python or on PATH)")
@click.pass_context
def langflow(ctx: click.Context, host: str, port: int, langflow_bin: str | None) -> None:
    """Start a Langflow server that lists the flowcloud nodes (extra arguments go to `langflow run`).

    Sets LANGFLOW_COMPONENTS_PATH to flowcloud's components; the nodes then
    appear under the `flowcloud` category of the sidebar.
    """
    binary = langflow_bin or shutil.which("langflow", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if not binary:
        raise click.ClickException(LANGFLOW_INSTALL_HINT)
    env = {**os.environ, "LANGFLOW_COMPONENTS_PATH": str(components_path())}
    click.echo(f"LANGFLOW_COMPONENTS_PATH={env['LANGFLOW_COMPONENTS_PATH']}")
    os.execve(binary, [binary, "run", "--host", host, "--port", str(port), *ctx.args], env)


def register(cli: click.Group) -> None:
    cli.add_command(flow_group)
    cli.add_command(langflow)
