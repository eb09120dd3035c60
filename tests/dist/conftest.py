from ..train.conftest import base, data, one_thread  # noqa: F401  (shared fixtures)
