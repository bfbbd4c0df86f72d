"""No two files of the server import each other, directly or round a longer circle (imports inside functions
and under TYPE_CHECKING included: grimp reads them all). A circle means neither file can be read, tested or
replaced without the other; the request path (answer -> ranking -> batcher -> index) is one-way."""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("leanpremise", cache_dir=None)


def serve_edges(graph) -> list[tuple[str, str]]:
    mods = sorted(m for m in graph.modules if m.startswith("leanpremise.serve"))
    return [(a, b) for a in mods for b in sorted(graph.find_modules_directly_imported_by(a))
            if b.startswith("leanpremise.serve") and b != a]


def test_the_graph_sees_the_request_path(graph):
    """Not vacuous: the edges the circle check walks include the request path's."""
    edges = set(serve_edges(graph))
    assert ("leanpremise.serve.search.answer", "leanpremise.serve.search.ranking") in edges
    assert ("leanpremise.serve.search.batcher", "leanpremise.serve.search.index") in edges


def test_no_import_circle_among_the_servers_files(graph):
    circles = []
    for a, b in serve_edges(graph):
        back = graph.find_shortest_chain(importer=b, imported=a)
        if back is not None:
            circles.append(" -> ".join((a, *back)))
    assert not circles, "\n".join(sorted(set(circles)))


def test_the_search_code_does_not_import_the_http_layer(graph):
    imported = {b for a, b in serve_edges(graph) if a.startswith("leanpremise.serve.search")}
    assert not {m for m in imported if m.startswith("leanpremise.serve.http")}
