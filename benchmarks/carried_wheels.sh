# Sourced by the GPU scripts: installs the wheels the box cannot download (device tool: carry [".whl"]; PyAV and
# nvidia-cudnn-frontend for cp312) into /tmp/site, with bytecode as a pip install leaves it, and puts them on PYTHONPATH.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} && echo "wheels: $(ls .whl)"
fi
