"""The labeling loop: capture low-confidence queries (capture.py) into a store (store.py), label them through
an API and a page (routes.py, static/), and export the JSONL the pipeline trains on (export.py)."""
