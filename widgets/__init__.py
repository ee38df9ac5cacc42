"""tpuinfer_widgets: ipywidgets views over tpuinfer, for the book's chapters.

Each explorer calls a `tpuinfer` function (most through `tpuinfer.sweeps`) and draws what it
returns; none holds a formula. Each has `controls` (name -> ipywidget), `figure` (a plotly
FigureWidget), `message`, `update()`, `set(**controls)`, `snapshot()` (the figure as plain
plotly output, kept visible in a notebook saved without its widgets) and displays itself.

    import tpuinfer as ti
    ti.emulate(256)
    from tpuinfer_widgets import LayoutExplorer
    explorer = LayoutExplorer(mesh=(4, 8, 8))
    explorer            # the live widget
    explorer.snapshot() # the current plot, for readers without a kernel

`PredictionLock` is the predict-then-run exercise: the reader locks a number, then it runs the
step (or the cost model against the paper) and sets the three side by side.

Where the front-end cannot load plotly's FigureWidget (anywidget), call
`use_static_figures()` first: the explorers then redraw a static figure after every change.
"""
from .base import Explorer, Static, figure_mode, static, use_static_figures
from .context import ContextExplorer
from .crossover import CrossoverExplorer
from .layout_explorer import LayoutExplorer
from .pareto import ParetoExplorer
from .predict import PredictionLock

__all__ = ["Explorer", "Static", "static", "use_static_figures", "figure_mode",
           "LayoutExplorer", "CrossoverExplorer", "ParetoExplorer", "ContextExplorer",
           "PredictionLock"]
