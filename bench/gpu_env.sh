# Sourced at the start of a device command (`source bench/gpu_env.sh; python3 bench/...`): installs the wheels
# carried in .whl/ that the device image lacks (fla-core, pyrwkv-tokenizer: bench/NOTES.md "Device runs" says how
# to fetch them) and puts the checkout's src/ first on PYTHONPATH (NOTES says how to run an older copy beside it).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || return 1
export PYTHONPATH="/tmp/site:$PWD/src:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
