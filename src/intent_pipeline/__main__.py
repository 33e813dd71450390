"""`python -m intent_pipeline` is the `intent-pipeline` CLI."""

from intent_pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
