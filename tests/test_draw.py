"""Rendering: files open in each format, observed nodes are shaded, plates enclose their members,
arrows only on directed edges, and bad arguments are refused clearly."""

import matplotlib
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

import models
import pgm
from pgm.draw import OBSERVED_COLOR, LATENT_COLOR, layout_positions


def artists(ax):
    return {a.get_gid(): a for a in [*ax.patches, *ax.artists, *ax.collections, *ax.texts] if a.get_gid()}


def test_files_open_in_every_format(tmp_path):
    g = pgm.graph_of(models.EightSchools())
    for suffix in ("png", "svg", "pdf"):
        g.draw(tmp_path / f"g.{suffix}")
    from PIL import Image

    with Image.open(tmp_path / "g.png") as im:
        im.verify()
    svg = (tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "node:y" in svg and "plate:schools" in svg
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"


def test_observed_nodes_are_shaded_and_latents_are_not():
    ax = pgm.graph_of(models.Burglary()).draw(ax=Figure().add_subplot())
    a = artists(ax)
    observed = [n for n, attrs in pgm.graph_of(models.Burglary()).nodes.items() if attrs["kind"] == "observed"]
    assert observed
    for n in ["burglary", "earthquake", "alarm", "john_calls", "mary_calls"]:
        fill = to_hex(a[f"node:{n}"].get_facecolor())
        assert fill == (OBSERVED_COLOR if n in observed else LATENT_COLOR), n


def test_plates_enclose_their_members_and_only_them():
    g = pgm.graph_of(models.MatrixFactorization(num_users=5, num_items=4))  # overlapping plates users x items
    ax = g.draw(ax=Figure().add_subplot())
    a = artists(ax)
    for plate in g.plates:
        box = a[f"plate:{plate}"]
        x0, y0 = box.get_x(), box.get_y()
        x1, y1 = x0 + box.get_width(), y0 + box.get_height()
        for n, attrs in g.nodes.items():
            c = a[f"node:{n}"]
            cx, cy = c.center
            r = c.radius
            inside = x0 <= cx - r and cx + r <= x1 and y0 <= cy - r and cy + r <= y1
            assert inside == (plate in attrs["plates"]), (plate, n)


def test_nested_plates_are_nested():
    import pyro
    import pyro.distributions as dist

    def nested():
        with pyro.plate("outer", 3):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            with pyro.plate("inner", 4, dim=-2):
                pyro.sample("b", dist.Normal(a, 1.0))

    g = pgm.graph_of(nested)
    a = artists(g.draw(ax=Figure().add_subplot()))
    o, i = a["plate:outer"], a["plate:inner"]
    assert o.get_x() < i.get_x() and i.get_x() + i.get_width() < o.get_x() + o.get_width()
    assert o.get_y() < i.get_y() and i.get_y() + i.get_height() < o.get_y() + o.get_height()


def test_arrows_only_on_directed_edges_and_dashed_deterministic():
    import pyro
    import pyro.distributions as dist

    def program():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        m = pyro.deterministic("m", 2 * z)
        pyro.sample("x", dist.Normal(m, 1.0))

    g = pgm.graph_of(program)
    a = artists(g.draw(ax=Figure().add_subplot()))
    assert len(a["arrowheads"].get_paths()) == len(g.directed_edges) == 2
    assert a["node:m"].get_linestyle() == "--"

    rbm = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), level="unit")
    a = artists(rbm.draw(ax=Figure().add_subplot()))
    assert len(a["arrowheads"].get_paths()) == 0
    assert len(a["edges:undirected"].get_segments()) == 12


def test_layouts_textbook_shapes():
    dag = pgm.graph_of(models.Chain())
    pos = layout_positions(dag)
    assert pos["a"][1] > pos["b"][1] > pos["c"][1]  # roots on top, arrows down
    rbm = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), level="unit")
    pos = layout_positions(rbm)
    rows = {n: round(y, 6) for n, (x, y) in pos.items()}
    assert len(set(rows.values())) == 2
    assert len({rows[f"v[{i}]"] for i in range(4)}) == 1 and len({rows[f"h[{j}]"] for j in range(3)}) == 1
    assert rows["v[0]"] < rows["h[0]"]  # observed units in the bottom row
    fg = pgm.graph_of(models.RBM(v_dim=4, h_dim=3)).factor_graph()
    a = artists(fg.draw(ax=Figure().add_subplot()))
    assert isinstance(a["node:interaction"], matplotlib.patches.Rectangle)


def test_bad_arguments(tmp_path):
    g = pgm.graph_of(models.Chain())
    with pytest.raises(ValueError, match="suffix|path"):
        g.draw(tmp_path / "g.jpeg")
    with pytest.raises(ValueError, match="node_size"):
        g.draw(node_size=3)
    with pytest.raises(ValueError, match="layout"):
        g.draw(layout="sideways")
    with pytest.raises(ValueError, match="missing"):
        g.draw(layout={"a": (0, 0)})


# ---------------------------------------------------------------- issue 10: textbook figures
def _extent(artist, renderer):
    return artist.get_window_extent(renderer)


def test_plate_labels_overlap_no_node_and_no_edge():
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for g in (pgm.graph_of(models.MatrixFactorization(num_users=3, num_items=4)), pgm.graph_of(models.EightSchools()),
              pgm.graph_of(models.VAE(x_dim=4, z_dim=2), show_params=True)):
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = g.draw(ax=fig.add_subplot())
        renderer = fig.canvas.get_renderer()
        a = artists(ax)
        for p in g.plates:
            label = _extent(a[f"plate-label:{p}"], renderer)
            for n in g.nodes:
                assert not label.overlaps(_extent(a[f"node:{n}"], renderer)), (p, n)
            for gid in ("edges:directed", "edges:undirected"):
                for seg in a[gid].get_segments():
                    pts = ax.transData.transform(np.asarray(seg))
                    inside = (pts[:, 0] > label.x0) & (pts[:, 0] < label.x1) & (pts[:, 1] > label.y0) & (pts[:, 1] < label.y1)
                    assert not inside.any(), (p, gid)
        assert a["plate-label:data"].get_text() == "N" if "data" in g.plates else True


def test_dbn_layers_stacked_top_to_bottom():
    dbn = models.DBN(v_dim=4, hidden_dims=(3, 2))
    pos = layout_positions(pgm.graph_of(dbn))
    assert pos["h2"][1] > pos["h1"][1] > pos["v"][1]
    units = layout_positions(pgm.graph_of(dbn, level="unit"))
    assert min(units[f"h2[{j}]"][1] for j in range(2)) > max(units[f"h1[{j}]"][1] for j in range(3))
    assert min(units[f"h1[{j}]"][1] for j in range(3)) > max(units[f"v[{j}]"][1] for j in range(4))


def test_markov_chain_runs_left_to_right():
    import pyro
    import pyro.distributions as dist
    import torch

    def hmm(x):
        z = pyro.sample("z0", dist.Normal(0.0, 1.0))
        for t in range(len(x)):
            if t:
                z = pyro.sample(f"z{t}", dist.Normal(z, 1.0))
            pyro.sample(f"x{t}", dist.Normal(z, 1.0), obs=x[t])

    pos = layout_positions(pgm.graph_of(hmm, torch.zeros(5)))
    assert [pos[f"z{t}"][0] for t in range(5)] == sorted(pos[f"z{t}"][0] for t in range(5))
    assert len({pos[f"z{t}"][1] for t in range(5)}) == 1
    assert all(pos[f"x{t}"][1] < pos[f"z{t}"][1] and pos[f"x{t}"][0] == pos[f"z{t}"][0] for t in range(5))


def test_rbm_factor_graph_squares_sit_between_their_units():
    fg = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), level="unit").factor_graph()
    pos = layout_positions(fg)
    for f in fg.nodes:
        if fg.nodes[f]["kind"] != "factor":
            continue
        scope = fg.neighbors(f)
        ys = [pos[v][1] for v in scope]
        if len(scope) == 2:
            assert min(ys) < pos[f][1] < max(ys)
        elif scope[0].startswith("h"):
            assert pos[f][1] > ys[0]  # hidden biases above the hidden row
        else:
            assert pos[f][1] < ys[0]  # visible biases below the visible row


def test_show_params_draws_parameter_dots():
    g = pgm.graph_of(models.VAE(x_dim=4, z_dim=2), show_params=True)
    a = artists(g.draw(ax=Figure().add_subplot()))
    dot, circle = a["node:decoder"], a["node:z"]
    assert isinstance(dot, matplotlib.patches.Circle) and dot.get_radius() < 0.5 * circle.get_radius()
    assert to_hex(dot.get_facecolor()) == "#000000"


def test_large_unit_graph_is_refused_with_a_hint():
    g = pgm.graph_of(models.VAE(x_dim=64, z_dim=4), level="unit")
    with pytest.raises(ValueError, match="site-level"):
        g.draw(ax=Figure().add_subplot())
