#!/usr/bin/env bash
# Trains the shipped LPDC weights (assets/lpdc/lpdc.pt) and the ODE baseline (assets/lpdc/lpdc_ode.pt).
# Stage 1: occupancy warm-up of the spatial encoder + decoder (shared by both methods), 4.5 min.
# Stage 2: LPDC and the ODE baseline from the warm-up, in parallel, 10 min each (one CPU thread each).
# Usage: assets/lpdc/train_shipped.sh OUT_DIR   (run from the repository root)
set -euo pipefail
W=${1:-out/lpdc}
mkdir -p "$W"
PY=".venv/bin/python -m models.lpdc.training --preset small --workers 1"
nice -n 10 $PY --stage occupancy --kind lpdc --out "$W/lpdc_warmup.pt" --threads 1 --max-minutes 4.5 \
  --summary "$W/lpdc_warmup_train.json" > "$W/warmup.log" 2>&1
nice -n 10 $PY --kind lpdc --init "$W/lpdc_warmup.pt" --out "$W/lpdc.pt" --threads 1 --max-minutes 10 \
  --snapshot-every 50 --summary "$W/lpdc_train.json" > "$W/lpdc.log" 2>&1 &
nice -n 10 $PY --kind ode --init "$W/lpdc_warmup.pt" --out "$W/lpdc_ode.pt" --threads 1 --max-minutes 10 \
  --summary "$W/lpdc_ode_train.json" > "$W/ode.log" 2>&1 &
wait
