"""Generate the example flows in ``flows/`` from the components' current source.

    python -m flowcloud.flows.build           # rewrite flows/*.json
    python -m flowcloud.flows.build --check   # exit 1, naming each flow JSON that is stale

Every node is built by lfx itself, so the JSON is what Langflow would save:
flowcloud nodes by ``lfx.custom.utils.build_component``, the function Langflow
runs on each file of ``LANGFLOW_COMPONENTS_PATH`` (it embeds the file's source
as the node's code); Chat Input and Chat Output from lfx's bundled component
index; nodes, edges and positions by ``lfx.graph.flow_builder``. Node ids are
fixed, so the same sources always give the same bytes. Needs lfx installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

FLOWS_DIR = Path(__file__).resolve().parent
COMPONENTS_DIR = FLOWS_DIR / "components" / "flowcloud"


@dataclass(frozen=True)
class ExampleFlow:
    """One example flow: its file, nodes (id -> component type), settings and wiring."""

    file: str
    name: str
    description: str
    nodes: dict[str, str]
    edges: list[tuple[str, str, str, str]]  # source id, output, target id, input
    config: dict[str, dict] = field(default_factory=dict)


def routed_by_length(file: str, name: str, description: str, tag: str, short: str,
                     config: dict[str, dict]) -> ExampleFlow:
    """The document flow flowcloud grew from: Chat Input -> Clean Text -> Route by Length, its short
    branch to the component ``short`` and its long one to Cloud Summarize, both joined by Summary
    Report -> Chat Output. ``config`` is keyed by component type; node ids are ``<type>-fc<tag><n>``,
    fixed, so the JSON stays byte for byte the same."""
    types = ["ChatInput", "CleanText", "RouteByLength", short, "CloudSummarize", "SummaryReport", "ChatOutput"]
    ids = [f"{kind}-fc{tag}{n}" for n, kind in enumerate(types, 1)]
    chat_in, clean, route, short_id, cloud, report, chat_out = ids
    return ExampleFlow(
        file=file, name=name, description=description, nodes=dict(zip(ids, types)),
        edges=[(chat_in, "message", clean, "text"), (clean, "text_output", route, "text"),
               (route, "short", short_id, "text"), (route, "long", cloud, "text"),
               (short_id, "details", report, "summaries"), (cloud, "record", report, "summaries"),
               (report, "report", chat_out, "input_value")],
        config={ids[types.index(kind)]: settings for kind, settings in config.items()},
    )


FLOWS = [
    ExampleFlow(
        file="queued_completion.json",
        name="Queued Completion",
        description="Chat input answered by a flowcloud worker: the model call is queued, retried and billed there.",
        nodes={"ChatInput-fcQC1": "ChatInput", "CloudCompletion-fcQC2": "CloudCompletion",
               "ChatOutput-fcQC3": "ChatOutput"},
        edges=[("ChatInput-fcQC1", "message", "CloudCompletion-fcQC2", "prompt"),
               ("CloudCompletion-fcQC2", "text", "ChatOutput-fcQC3", "input_value")],
        # `lfx run` gives a graph no flow name, so name the cost line explicitly.
        config={"CloudCompletion-fcQC2": {"cost_flow": "queued_completion"}},
    ),
    ExampleFlow(
        file="batch_questions.json",
        name="Batch Questions",
        description="One question per line in the chat input; flowcloud answers them all in parallel, "
                    "as a table in input order.",
        nodes={"ChatInput-fcBQ1": "ChatInput", "BatchSubmit-fcBQ2": "BatchSubmit", "ChatOutput-fcBQ3": "ChatOutput"},
        edges=[("ChatInput-fcBQ1", "message", "BatchSubmit-fcBQ2", "texts"),
               ("BatchSubmit-fcBQ2", "table", "ChatOutput-fcBQ3", "input_value")],
        config={"BatchSubmit-fcBQ2": {"cost_flow": "batch_questions"}},
    ),
    routed_by_length(
        file="document_pipeline.json",
        name="Document Pipeline",
        description="A document in the chat input is cleaned, then routed by length: a short one is summarized "
                    "locally with no model call, a long one in the cloud (chunked, in parallel, then merged); "
                    "the report says which and what it cost.",
        tag="DP", short="LocalSummary",
        config={"CloudSummarize": {"cost_flow": "document_pipeline"}},
    ),
    routed_by_length(
        file="embed_or_summarize.json",
        name="Embed or Summarize",
        description="A document in the chat input is cleaned, then routed by length: a short one is embedded by "
                    "the workers' hybrid group (the local MiniLM for texts within its window, the cloud past it), "
                    "a long one summarized in the cloud; the report says which tier and what it cost.",
        tag="ES", short="EmbedText",
        # "embeddings": the hybrid group the README's local-embeddings example configures.
        config={"EmbedText": {"model": "embeddings", "cost_flow": "embed_or_summarize"},
                "CloudSummarize": {"cost_flow": "embed_or_summarize"}},
    ),
]


def component_registry() -> dict[str, dict]:
    """Node templates by type: lfx's bundled components plus ours, built from their files."""
    from lfx.custom.utils import build_component
    from lfx.graph.flow_builder.builder import load_local_registry

    registry = dict(load_local_registry())
    for path in sorted(COMPONENTS_DIR.glob("*.py")):
        name, template = build_component({"code": path.read_text(encoding="utf-8"), "output_types": []})
        registry[name] = template
    return registry


def build_flow(spec: ExampleFlow, registry: dict[str, dict]) -> dict:
    from lfx.graph.flow_builder import add_component, add_connection, configure_component, empty_flow, layout_flow

    flow = empty_flow(spec.name, spec.description)
    for node_id, component_type in spec.nodes.items():
        add_component(flow, component_type, registry, component_id=node_id)
        flow["data"]["nodes"][-1]["data"]["node"].pop("category", None)  # a registry key, not node data
    for node_id, values in spec.config.items():
        configure_component(flow, node_id, dict(values))
    for source, output, target, field_name in spec.edges:
        add_connection(flow, source, output, target, field_name, registry=registry)
    layout_flow(flow)
    # Langflow requires an id; a stable one keeps regeneration byte-identical.
    flow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowcloud:flows/{spec.file}"))
    return {"id": flow_id, **flow, "is_component": False, "tags": [], "last_tested_version": version("lfx")}


def render(flow: dict) -> str:
    return json.dumps(flow, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowcloud.flows.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a flow JSON is stale")
    parser.add_argument("--dir", type=Path, default=FLOWS_DIR, help="where the flow JSONs live (default: flows/)")
    args = parser.parse_args(argv)

    registry = component_registry()
    stale = []
    for spec in FLOWS:
        path = args.dir / spec.file
        text = render(build_flow(spec, registry))
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(spec.file)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; regenerate with `python -m flowcloud.flows.build`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
