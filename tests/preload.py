"""A plugin for CI's run (.ci/run: python -m pytest -p tests.preload): each xdist worker imports the heavy libraries
that the test modules import, before coverage's tracer starts. Traced, those imports cost every worker a third more
(45 against 34 CPU-s for three workers to start and collect); the package's own modules are still imported, and
measured, as the test modules import them."""

import os

if "PYTEST_XDIST_WORKER" in os.environ:  # the controller runs no test: it needs none of them
    import fastapi.testclient  # noqa: F401
    import lightning.pytorch.cli  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import optuna  # noqa: F401
    import playwright.sync_api  # noqa: F401
    import sqlalchemy  # noqa: F401
    import uvicorn  # noqa: F401
