#!/bin/sh
# Applies a Casebridge overlay in the order the services need (docs/kubernetes.md, "Upgrade"):
#   1. the previous release's finished migration Jobs are deleted (a Job's pod template cannot
#      change, so the new image's Job could not be applied over them);
#   2. everything but the api and worker pods is applied: the settings ConfigMaps, the volume
#      claims, the network policies and the migration Jobs (`<service> db upgrade`);
#   3. it waits until every migration Job has completed; a failed migration stops here, and the
#      running pods keep serving the schema they know (as `service_completed_successfully`
#      does in docker-compose.yml);
#   4. the whole overlay is applied: the apis and workers roll to the new image.
#
#   deploy/kustomize/rollout.sh deploy/kustomize/overlays/production
#
# KUBECTL (default kubectl), NAMESPACE (default casebridge, the overlays' namespace) and
# MIGRATION_TIMEOUT (default 15m) may be set in the environment.
set -eu

overlay=${1:?usage: deploy/kustomize/rollout.sh deploy/kustomize/overlays/<overlay>}
kubectl=${KUBECTL:-kubectl}
namespace=${NAMESPACE:-casebridge}
timeout=${MIGRATION_TIMEOUT:-15m}
# tests/test_kubernetes.py checks that this selects every migration Job and what it reads, and
# no api or worker.
before_pods='app.kubernetes.io/component notin (api,worker)'
migrations='app.kubernetes.io/part-of=casebridge,app.kubernetes.io/component=migrate'

"$kubectl" -n "$namespace" delete job -l "$migrations" --ignore-not-found --wait=true
"$kubectl" apply -k "$overlay" -l "$before_pods"
"$kubectl" -n "$namespace" wait --for=condition=complete job -l "$migrations" --timeout="$timeout"
"$kubectl" apply -k "$overlay"
