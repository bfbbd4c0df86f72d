"""No circles between files: the import graph of `src/leanpremise` (every import, those inside functions
included, as grimp reads them) has no strongly connected component of more than one module, and nothing
in `leanpremise.serve.search` imports `leanpremise.serve.http` (the search layer sits under the HTTP layer).

A circle makes a module impossible to read, test or move without the other; import-linter's layers
contract catches circles between packages only, not between two files of one package."""

from __future__ import annotations

import grimp
import networkx as nx
import pytest

PACKAGE = "leanpremise"

@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE, include_external_packages=False, cache_dir=None)


def module_graph(graph) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(graph.modules)
    g.add_edges_from((m, i) for m in graph.modules for i in graph.find_modules_directly_imported_by(m))
    return g


def circles(g: nx.DiGraph) -> list[list[str]]:
    """Each circle's modules, as one cycle through them (what the failure message shows)."""
    out = []
    for component in nx.strongly_connected_components(g):
        if len(component) > 1:
            out.append(nx.find_cycle(g.subgraph(component)))
    return [[a for a, _ in cycle] + [cycle[-1][1]] for cycle in out]


def test_the_check_sees_a_circle():
    """Not vacuous: two modules importing each other are reported, with the path between them."""
    g = nx.DiGraph([("leanpremise.a", "leanpremise.b"), ("leanpremise.b", "leanpremise.a"),
                    ("leanpremise.b", "leanpremise.c")])
    assert circles(g) in ([["leanpremise.a", "leanpremise.b", "leanpremise.a"]],
                          [["leanpremise.b", "leanpremise.a", "leanpremise.b"]])


def test_no_circle_between_files(graph):
    g = module_graph(graph)
    assert len(g) > 100 and g.number_of_edges() > 300  # the graph is the package's, function-level imports too
    found = circles(g)
    assert not found, "import circles between files:\n" + "\n".join(" -> ".join(c) for c in found)


def test_search_does_not_import_http(graph):
    found = sorted((m, i) for m in graph.modules if m.startswith(f"{PACKAGE}.serve.search")
                   for i in graph.find_modules_directly_imported_by(m)
                   if i.startswith(f"{PACKAGE}.serve.http"))
    assert not found, "serve.search imports serve.http: " + ", ".join(f"{m} -> {i}" for m, i in found)
