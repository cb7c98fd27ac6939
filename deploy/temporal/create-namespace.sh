#!/bin/sh
# The namespace job of docker-compose.yml (temporalio/admin-tools): the plain server image
# creates no namespace, so this one creates Keel's once the server answers. Keel's workers
# register their search attribute (KeelPendingGates) themselves.
set -eu

namespace="${DEFAULT_NAMESPACE:-default}"
address="${TEMPORAL_ADDRESS:-temporal:7233}"

until temporal operator cluster health --address "$address" >/dev/null 2>&1; do
  echo "waiting for Temporal at $address"
  sleep 2
done
if temporal operator namespace describe -n "$namespace" --address "$address" >/dev/null 2>&1; then
  echo "namespace $namespace exists"
else
  temporal operator namespace create -n "$namespace" --address "$address"
  echo "namespace $namespace created"
fi
