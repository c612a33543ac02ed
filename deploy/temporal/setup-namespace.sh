#!/bin/sh
# One-shot job (temporalio/admin-tools): the namespace and our custom search attributes.
set -eu
NS="${TEMPORAL_NAMESPACE:-default}"
ADDR="${TEMPORAL_ADDRESS:-temporal:7233}"

until temporal operator cluster health --address "$ADDR"; do sleep 2; done
temporal operator namespace describe -n "$NS" --address "$ADDR" >/dev/null 2>&1 \
  || temporal operator namespace create -n "$NS" --retention 72h --address "$ADDR"

for name in UserId TaskStatus; do
  temporal operator search-attribute list -n "$NS" --address "$ADDR" | grep -qw "$name" \
    || temporal operator search-attribute create -n "$NS" --name "$name" --type Keyword --address "$ADDR"
done
echo "namespace $NS ready"
