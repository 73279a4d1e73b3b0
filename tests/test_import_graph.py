"""No import circles between modules of ``imgsim`` and ``imgsim_tools``, and the layer never imports the tooling.

The graph is grimp's (import-linter's engine): every import statement counts, those inside functions and under
``TYPE_CHECKING`` included, so a circle cannot hide behind a late import. A circle shows as a strongly connected
component of more than one module; the failure lists each with the lines that close it.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("imgsim", "imgsim_tools")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; single modules left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def test_the_component_search_finds_circles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}, "f": {"g"}, "g": {"f"}}
    assert strongly_connected(edges) == [["a", "b", "c"], ["f", "g"]]
    assert strongly_connected({"x": {"y"}, "y": set()}) == []


def test_no_import_circles(graph):
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    circles = strongly_connected(edges)
    report = []
    for circle in circles:
        report.append(" <-> ".join(circle))
        for importer in circle:
            for imported in sorted(edges[importer] & set(circle)):
                lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
                report.append(f"    {importer} imports {imported} (line {', '.join(map(str, lines))})")
    assert not circles, "import circles:\n" + "\n".join(report)


def test_the_layer_never_imports_the_tooling(graph):
    """``imgsim`` is what the Lambda layer ships; ``imgsim_tools`` is developer tooling that is not in it."""
    offending = sorted(
        f"{importer} imports {imported}"
        for importer in graph.find_descendants("imgsim") | {"imgsim"}
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported == "imgsim_tools" or imported.startswith("imgsim_tools.")
    )
    assert offending == []


def test_the_graph_holds_both_packages(graph):
    """The graph is built from the sources (a typo in PACKAGES would leave nothing to check)."""
    assert {"imgsim.store", "imgsim.deployment", "imgsim_tools.cli", "imgsim_tools.local.stack"} <= graph.modules
    assert "imgsim.store" in graph.find_modules_directly_imported_by("imgsim.deployment")
