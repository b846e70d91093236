"""``reclmis app``: a page to try a model in a browser (extra ``app``: Gradio). :class:`AppSession` holds the logic
(no Gradio); :func:`build_app` / :func:`serve` make and serve the page."""

from .page import build_app, example_notes, serve
from .session import AppSession, View

__all__ = ["AppSession", "View", "build_app", "example_notes", "serve"]
