#!/bin/sh
# Keeps 60 orphans running (each `sleep` outlives the subshell that started it, so it becomes
# the worker's child) and itself until they end: for bench/leftovers.sh.
printf 'Content-Type: text/plain\n\n'
i=0
while [ "$i" -lt 60 ]; do
    (sleep 20 &)
    i=$((i + 1))
done
echo held
sleep 20
