#!/bin/sh
# One-shot schema job (temporalio/admin-tools): create Temporal's two databases and bring their
# schemas to the version this image ships. Safe to re-run: `create` fails on an existing
# database (ignored) and update-schema only applies missing versions.
set -eu
SQL="temporal-sql-tool --plugin postgres12 --ep ${POSTGRES_SEEDS} -u ${POSTGRES_USER} -p ${DB_PORT}"
SCHEMA=/etc/temporal/schema/postgresql/v12

echo "waiting for ${POSTGRES_SEEDS}:${DB_PORT}"
until nc -z "${POSTGRES_SEEDS}" "${DB_PORT}"; do sleep 1; done

for db in temporal temporal_visibility; do
  dir=temporal
  [ "$db" = temporal_visibility ] && dir=visibility
  $SQL --db "$db" create || echo "database $db exists"
  $SQL --db "$db" setup-schema -v 0.0 || echo "schema of $db already set up"
  $SQL --db "$db" update-schema -d "$SCHEMA/$dir/versioned"
done
echo "temporal schema ready"
