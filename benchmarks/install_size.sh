#!/usr/bin/env bash
# Installed size of each virtual environment given (its site-packages), for README's torch-free vs full install:
#   python3 -m venv /tmp/dev && /tmp/dev/bin/pip install "scnet-deploy"            # torch-free base
#   python3 -m venv /tmp/ov  && /tmp/ov/bin/pip install "scnet-deploy[openvino]"   # + OpenVINO
#   bash benchmarks/install_size.sh /tmp/dev /tmp/ov .venv
set -euo pipefail
for venv in "$@"; do
    site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    torch=$("$venv/bin/python" -c "import importlib.util as u; print('with torch' if u.find_spec('torch') else 'no torch')")
    echo "$(du -sh "$site" | cut -f1)	$venv ($torch)"
done
