"""Names vulture cannot see used: called by frameworks (FastAPI routes, click, SQLAlchemy events, pytest,
PEP 562 module `__getattr__`, torch `forward`) or set for a library to read. Read by tests/test_lint.py."""

# ruff: noqa: B018, F821
create_app_from_env  # uvicorn --factory genpromp_annotate_backend.__main__:create_app_from_env
basic_auth, bad_request, genpromp_error, health, webhook  # FastAPI middleware, handlers, routes
__getattr__  # lazy module attributes
db_upgrade_command  # click command
max_content_width, terminal_width  # click context settings
_on_connect, _on_begin, isolation_level  # SQLAlchemy event listeners, DBAPI connection attribute
IMAGE_STATUSES  # the documented values of Image.status
forward, reset_parameters  # torch.nn.Module (reset_parameters: called by its __init__)
pytestmark, pytest_report_header, should_exit  # pytest, uvicorn.Server
