"""The web UI, `latentdiff serve` (the `ui` extra): `catalog` (which models, which tasks, a shared
pool), `jobs` (one request → checked inputs → pipeline → PNGs with their parameters), `server` (what
the page's events share) and `app` (the Gradio page); `load` is the load test. Only `server`, `app`
and `load` import Gradio."""
