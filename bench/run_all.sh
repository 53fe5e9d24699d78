#!/usr/bin/env bash
# Reproduce the figures of bench/RESULTS.md (about 17 minutes on 2 cores; --core: the headline
# figures only, about 5 minutes, without the encoder comparison).
# Usage: bash bench/run_all.sh [--core | --web | --handoff | --desk | --wechat | --rasa]   (after `make install`; idle machine)
# --web: only the web chat load benchmark (about 2 minutes), added to bench/out/measurements.jsonl.
# --handoff: only the escalation figures (sentiment, simulation, handoff latency; about 4 minutes).
# --desk: only the agent desk in Chromium (about 1 minute; needs /usr/bin/chromium, `make browser`).
# --wechat: only the WeChat callback under load (about 2 minutes).
# --rasa: Baton's engine against Rasa's DIET on the same sets (about 80 minutes; needs `make rasa-venv`);
#         not part of the full run, because of its length.
# --crash: the crash campaign (bench/crash_campaign.py, about 8 minutes).
# Two data sets are not in the repository; they are read from ../shared/datasets beside the clone:
# BANKING77 (PolyAI, CC BY 4.0; banking77/train.csv and test.csv with columns text,category, as in
# PolyAI's task-specific-datasets repository) and Chinese reviews (zh_sentiment/waimai_10k.csv and
# ChnSentiCorp_htl_all.csv, columns label,review, from the ChineseNlpCorpus collection). See
# docs/architecture.md, "Benchmarks that need an outside dataset".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BATON=.venv/bin/baton
M="$PY bench/measure.py"
DATA=bench/data

# The web chat load benchmark: 200 sessions, a message every 2 s each, for 60 s, against a
# `baton serve` that bench/web_load.py starts (private Redis) and stops; see its --help.
web_load() {
    $M web-load -- $PY bench/web_load.py --start --sessions 200 --interval 2 --duration 60 --json
}
if [ "${1:-}" = "--web" ]; then
    web_load
    exit 0
fi
if [ "${1:-}" = "--crash" ]; then
    $PY bench/crash_campaign.py --chains 4 --crashes 6 --customers 40
    exit 0
fi

# Escalation: sentiment on the chat-style and review sets, scripted conversations through the whole
# service, and the time from an escalating message to the agent's WebSocket under load.
handoff() {
    for set in $DATA/sentiment/chat_en.csv $DATA/sentiment/chat_zh.csv ../shared/datasets/zh_sentiment/waimai_10k.csv \
        ../shared/datasets/zh_sentiment/ChnSentiCorp_htl_all.csv; do
        $M "sentiment-$(basename "$set" .csv)" -- $BATON sentiment --csv "$set" --skip-empty --json
    done
    $M simulate -- $BATON simulate --kb nlu_data --scenarios bench/scenarios/en.jsonl \
        --scenarios bench/scenarios/zh.jsonl --json
    $M handoff-latency -- $PY bench/handoff_latency.py --start --conversations 200 --seconds 60 \
        --escalations 100 --json
}
if [ "${1:-}" = "--handoff" ]; then
    handoff
    exit 0
fi

# The agent desk in Chromium: escalation -> the desk, messages, suggestions, replies, resolve.
desk() {
    $M agent-desk -- $PY bench/agent_desk.py --chats 30 --loads 10 --json
}
if [ "${1:-}" = "--desk" ]; then
    desk
    exit 0
fi

# The WeChat callback under a steady load: answered in the callback (passive) or later, and how fast.
wechat() {
    $M wechat-callback -- $PY bench/wechat_callback.py --followers 50 --interval 2 --seconds 60 --json
}
if [ "${1:-}" = "--wechat" ]; then
    wechat
    exit 0
fi

# The peer: Rasa 3.6 (DIET, bot/rasa's configs) and Baton's engine, trained and scored one after the other.
if [ "${1:-}" = "--rasa" ]; then
    $PY bench/rasa_peer.py --banking-epochs 30 --kb-epochs 100 --json
    exit 0
fi

rm -f bench/out/measurements.jsonl

$PY bench/banking77_to_rasa.py ../shared/datasets/banking77 bench/out/banking77

# BANKING77 with the default encoder choice (English data: minilm-int8).
$M banking77 -- $BATON evaluate --train bench/out/banking77/train.yml --test bench/out/banking77/test.yml \
    --json --report bench/out/banking77-report.json

# The default knowledge base against the held-out sets (Chinese data: e5-small).
$M lumo-zh -- $BATON evaluate --train nlu_data/nlu.yml --test $DATA/zh_dev.yml --json
$M lumo-en -- $BATON evaluate --train nlu_data/nlu.yml --test $DATA/en_dev.yml --json
$M lumo-oos -- $BATON evaluate --train nlu_data/nlu.yml --test $DATA/oos_test.yml --json
$M lumo-all -- $BATON evaluate --train nlu_data/nlu.yml --test $DATA/zh_dev.yml --test $DATA/en_dev.yml \
    --test $DATA/oos_test.yml --json --report bench/out/lumo-all-report.json

if [ "${1:-}" = "--core" ]; then
    echo "core measurements: bench/out/measurements.jsonl"
    exit 0
fi

# Encoder comparison behind the default choice.
for enc in minilm e5-small; do
    $M "banking77-$enc" -- $BATON evaluate --train bench/out/banking77/train.yml \
        --test bench/out/banking77/test.yml --json --encoder "$enc"
done
for enc in minilm-int8 minilm; do
    $M "lumo-all-$enc" -- $BATON evaluate --train nlu_data/nlu.yml --test $DATA/zh_dev.yml \
        --test $DATA/en_dev.yml --test $DATA/oos_test.yml --json --encoder "$enc"
done

# Training the default knowledge base end to end (NLU model + index).
$M train-nlu_data -- $BATON train --kb nlu_data --model-dir bench/out/models

# The conversation service under load (uses the model of var/models, trained on first start).
web_load
handoff
desk
wechat
echo "all measurements: bench/out/measurements.jsonl"
