"""The import graph of ``archer/``: no circles, and every import runs down the layer order.

Layer: a plain sync test of the source text, with only the standard library's ``ast`` (nothing
is imported, so a module that fails to import still gets checked).

What counts as an import: every ``import``/``from … import`` anywhere in a module, including
those inside functions (they run when the function does). Imports under ``if TYPE_CHECKING:``
never run, so they do not make a *runtime* circle; they still must not point up the layers (an
annotation naming a web type in the call layer is the same coupling as an import). A
``from archer.x import y`` where ``archer/x/y.py`` exists is an import of that module.

The layers (``ARCHITECTURE.md``, "web → call → ports ← adapters"), as rooms and what each may
import besides itself:

========== =========================================================== =========================
room       modules                                                      may import
========== =========================================================== =========================
pure       protocol and codec modules: frames, events, records, G.711   nothing of Archer's but
           (no I/O library: no trio, quart, sqlalchemy, structlog, …)   pure
support    settings, logs, metrics, the two websocket helpers           pure
ports      ``call/ports.py``, ``bank/ports.py``                         pure, support
call       ``archer/call/*`` (the per-call nursery and its parts)       pure, support, ports
bank       the banking tools (``bank/tools.py``, ``verification.py``)   + call (they are tools)
adapters   ``cartesia/`` clients, ``twilio/rest.py``, ``stream.py``     pure, support, ports
db         ``archer/db/*`` (the store, spool, bank queries)             pure, support, ports
web        ``archer/web/*``, ``app.py``                                 + call, bank, adapters
emulators  ``archer/emulators/*`` (stand-ins for Twilio and Cartesia)   pure, support
bench      ``archer/bench/*``                                           everything but app
app        ``cli``, ``server``, ``workers``, ``demo``, ``emulate``        everything
========== =========================================================== =========================

So the call layer never imports web, db, the Cartesia clients or Twilio's REST adapter; adapters
and the database never import the call layer's machinery (only its ports and pure values); the
emulators know nothing of Archer beyond pure modules, and not even Archer's codecs of the peers'
protocols (``PEER_CODECS``): they read and write those from the peers' documents.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

import pytest

PACKAGE: Final = Path(__file__).resolve().parents[1] / "archer"

#: Modules that are pure protocol (or pure computation) and hold no I/O.
PURE: Final = frozenset(
    {
        "archer.errors",
        "archer.phone",
        "archer.audio.clips",
        "archer.audio.dtmf",
        "archer.audio.g711",
        "archer.audio.resample",
        "archer.audio.transcoder",
        "archer.audio.vad",
        "archer.audio.wav",
        "archer.bank.definitions",
        "archer.bank.pins",
        "archer.call.events",
        "archer.call.outbound",
        "archer.call.session_facts",
        "archer.call.records",
        "archer.cartesia.fields",
        "archer.cartesia.line",
        "archer.cartesia.managed",
        "archer.twilio.form",
        "archer.twilio.frames",
        "archer.twilio.signature",
        "archer.twilio.twiml",
    }
)
SUPPORT: Final = frozenset(
    {
        "archer.settings",
        "archer.logs",
        "archer.metrics",
        "archer.hypercorn_settings",
        "archer.websocket_client",
        "archer.websocket_stream",
    }
)
PORTS: Final = frozenset({"archer.call.ports", "archer.bank.ports"})
APP: Final = frozenset(
    {
        "archer",
        "archer.__main__",
        "archer.cli",
        "archer.server",
        "archer.workers",
        "archer.demo",
        "archer.demo_outbound",
        "archer.emulate",
    }
)
#: Rooms by package prefix, for the modules not named above (the longest prefix wins).
ROOMS_BY_PREFIX: Final = {
    "archer.audio": "pure",
    "archer.call": "call",
    "archer.bank": "bank",
    "archer.cartesia": "adapters",
    "archer.twilio": "adapters",
    "archer.db": "db",
    "archer.web": "web",
    "archer.app": "web",
    "archer.emulators": "emulators",
    "archer.bench": "bench",
}
_BELOW_CALL: Final = frozenset({"pure", "support", "ports"})
#: What each room may import besides itself.
MAY_IMPORT: Final[dict[str, frozenset[str]]] = {
    "pure": frozenset(),
    "support": frozenset({"pure"}),
    "ports": frozenset({"pure", "support"}),
    "call": _BELOW_CALL,
    "bank": _BELOW_CALL | {"call"},
    "adapters": _BELOW_CALL,
    "db": _BELOW_CALL,
    "web": _BELOW_CALL | {"call", "bank", "adapters"},
    "emulators": frozenset({"pure", "support"}),
    "bench": _BELOW_CALL | {"call", "bank", "adapters", "db", "web", "emulators"},
    "app": _BELOW_CALL | {"call", "bank", "adapters", "db", "web", "emulators", "bench"},
}
#: Libraries that do I/O (or schedule it): a pure module imports none of them.
IO_LIBRARIES: Final = frozenset(
    {
        "trio",
        "trio_websocket",
        "quart",
        "quart_trio",
        "hypercorn",
        "h11",
        "wsproto",
        "sqlalchemy",
        "psycopg",
        "structlog",
        "logging",
        "requests",
        "prometheus_client",
        "socket",
        "ssl",
        "asyncio",
        "twilio.rest",
        "twilio.http",
    }
)
#: Circles known when this test was written, each owned by an open piece of work: listed so the
#: test passes meanwhile, and refused once the circle is gone so the entry cannot outlive it.
KNOWN_CIRCLES: Final[frozenset[frozenset[str]]] = frozenset()


class Import(NamedTuple):
    importer: str
    imported: str  # an archer module, or the dotted name of anything else
    line: int
    type_only: bool


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """The imports in ``module``'s source, resolved to archer modules where they are ours."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def visit(node: ast.AST, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit(statement, True)
                    yield from _direct(statement, True)
                for statement in child.orelse:
                    yield from visit(statement, type_only)
                    yield from _direct(statement, type_only)
                continue
            yield from _direct(child, type_only)
            yield from visit(child, type_only)

    def _direct(node: ast.AST, type_only: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, type_only)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield Import(
                    module, submodule if submodule in modules else base, node.lineno, type_only
                )

    yield from visit(ast.parse(path.read_text(), str(path)), False)


def room_of(module: str) -> str:
    if module in PURE:
        return "pure"
    if module in SUPPORT:
        return "support"
    if module in PORTS:
        return "ports"
    if module in APP:
        return "app"
    prefixes = [prefix for prefix in ROOMS_BY_PREFIX if f"{module}.".startswith(f"{prefix}.")]
    if not prefixes:
        raise AssertionError(f"{module} belongs to no room: add it to tests/test_architecture.py")
    return ROOMS_BY_PREFIX[max(prefixes, key=len)]


def import_graph() -> tuple[dict[str, Path], list[Import]]:
    modules = module_names()
    found = [
        found for module, path in modules.items() for found in imports_of(module, path, modules)
    ]
    return modules, found


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def runtime_edges(modules: dict[str, Path], found: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in modules}
    for edge in found:
        # A module importing its own package (``from archer import __version__``) is not a
        # circle worth reporting: the package's ``__init__`` is run first either way.
        ours = edge.imported in modules and not edge.importer.startswith(f"{edge.imported}.")
        if ours and not edge.type_only and edge.imported != edge.importer:
            edges[edge.importer].add(edge.imported)
    return edges


def test_no_import_circles() -> None:
    modules, found = import_graph()
    present = set(circles(runtime_edges(modules, found)))
    unexpected = sorted(sorted(circle) for circle in present - KNOWN_CIRCLES)
    assert not unexpected, f"import circles among archer modules: {unexpected}"
    gone = sorted(sorted(circle) for circle in KNOWN_CIRCLES - present)
    assert not gone, f"these circles are gone: remove them from KNOWN_CIRCLES: {gone}"


def test_no_circles_even_counting_type_only_imports_in_call_and_web() -> None:
    """The call and web layers are circle-free even in what the type checker sees."""
    modules, found = import_graph()
    edges: dict[str, set[str]] = {module: set() for module in modules}
    for edge in found:
        if edge.imported in modules and room_of(edge.importer) in {"call", "web"}:
            edges[edge.importer].add(edge.imported)
    assert circles(edges) == []


def test_imports_follow_the_layer_order() -> None:
    modules, found = import_graph()
    wrong = [
        f"{edge.importer}:{edge.line} ({room_of(edge.importer)}) imports {edge.imported} "
        f"({room_of(edge.imported)}){' under TYPE_CHECKING' if edge.type_only else ''}"
        for edge in found
        if edge.imported in modules
        and room_of(edge.imported) != room_of(edge.importer)
        and room_of(edge.imported) not in MAY_IMPORT[room_of(edge.importer)]
    ]
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_pure_modules_import_no_io_library() -> None:
    _, found = import_graph()
    wrong = [
        f"{edge.importer}:{edge.line} imports {edge.imported}"
        for edge in found
        if room_of(edge.importer) == "pure"
        and any(
            edge.imported == library or edge.imported.startswith(f"{library}.")
            for library in IO_LIBRARIES
        )
    ]
    assert not wrong, "pure modules doing I/O:\n" + "\n".join(wrong)


def test_every_module_has_a_room() -> None:
    named = PURE | SUPPORT | PORTS | APP
    modules = module_names()
    assert named <= modules.keys(), f"named but missing: {sorted(named - modules.keys())}"
    for module in modules:
        assert room_of(module) in MAY_IMPORT


#: What the emulators may not import although it is pure: Archer's own codecs of the peers'
#: protocols. An emulator speaks a peer's protocol from the peer's documents, so that a test
#: driving Archer against it notices when Archer and the peer disagree; built with Archer's codec,
#: both sides would share every mistake.
PEER_CODECS: Final = ("archer.cartesia", "archer.twilio.frames")
#: Archer's Twilio modules an emulator may use, each for a reason: ``archer.twilio.signature``
#: is Twilio's documented request-signing algorithm (the emulated Twilio signs its webhooks and
#: checks Archer's stream URL with it: a shared algorithm, not a message codec), and
#: ``archer.twilio.twiml`` gives ``MAX_INLINE_TWIML_CHARS``, Twilio's published size limit.
EMULATORS_MAY_USE: Final = frozenset({"archer.twilio.signature", "archer.twilio.twiml"})


def codec_imports(found: list[Import]) -> list[str]:
    """The imports by an emulator of one of Archer's peer codecs (``PEER_CODECS``)."""
    return [
        f"{edge.importer}:{edge.line} imports {edge.imported}"
        for edge in found
        if edge.importer.startswith("archer.emulators")
        and edge.imported not in EMULATORS_MAY_USE
        and any(
            edge.imported == codec or edge.imported.startswith(f"{codec}.") for codec in PEER_CODECS
        )
    ]


def test_emulators_speak_the_peers_protocols_without_archers_codecs() -> None:
    """No emulator imports ``archer.cartesia`` or ``archer.twilio.frames`` (even for a type)."""
    _, found = import_graph()
    wrong = codec_imports(found)
    assert not wrong, "emulators using Archer's own codecs:\n" + "\n".join(wrong)


# The checker is itself checked: each rule must fail on a graph that breaks it.


def test_the_codec_rule_refuses_an_emulator_importing_a_codec(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from archer.cartesia.managed import DTMF_DIGITS\n"
        "from archer.twilio.signature import SignatureChecker\n"
        "from archer.audio import g711\n"
        "if TYPE_CHECKING:\n"
        "    from archer.twilio import frames\n"
    )
    modules = {
        name: source
        for name in ("archer.cartesia.managed", "archer.twilio.frames", "archer.audio.g711")
    }
    found = list(imports_of("archer.emulators.cartesia.sample", source, modules))
    assert codec_imports(found) == [
        "archer.emulators.cartesia.sample:2 imports archer.cartesia.managed",
        "archer.emulators.cartesia.sample:6 imports archer.twilio.frames",
    ]
    assert codec_imports(list(imports_of("archer.bench.sample", source, modules))) == []


def test_the_circle_finder_finds_a_circle_through_three_modules() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [frozenset({"a", "b", "c"})]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("archer.call.session", "archer.web.media", False),
        ("archer.call.pumps", "archer.db.store", False),
        ("archer.call.session", "archer.cartesia.client", False),
        ("archer.call.control", "archer.twilio.rest", False),
        ("archer.twilio.frames", "archer.call.state", False),
        ("archer.db.store", "archer.call.session", False),
        ("archer.emulators.twilio", "archer.call.session", False),
        ("archer.web.media", "archer.call.session", True),
        ("archer.cartesia.client", "archer.call.ports", True),
        ("archer.call.pumps", "archer.twilio.frames", True),
    ],
)
def test_the_layer_rule_refuses_imports_up_the_layers(
    importer: str, imported: str, allowed: bool
) -> None:
    assert (room_of(imported) in MAY_IMPORT[room_of(importer)]) is allowed


def test_type_checking_imports_are_told_apart(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import trio\n"
        "if TYPE_CHECKING:\n"
        "    from archer.call import state\n"
        "def later():\n"
        "    from archer.web import media\n"
    )
    modules = {"archer.call.state": source, "archer.web.media": source}
    found = {(edge.imported, edge.type_only) for edge in imports_of("x", source, modules)}
    assert found == {
        ("typing", False),
        ("trio", False),
        ("archer.call.state", True),
        ("archer.web.media", False),
    }
