from ..train.conftest import base, base_v6, data, one_thread  # noqa: F401  (shared fixtures)
