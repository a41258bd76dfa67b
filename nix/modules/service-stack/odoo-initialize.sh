# odoo-initialize: on a database dbinit left empty, install the initial modules (no demo data).
set -euo pipefail
found=$(@psql@ -h @socket@ -d @db@ -tAX \
  -c "SELECT to_regclass('public.ir_module_module') IS NOT NULL")
if [ "$found" != t ]; then
  echo "odoo: database "@db@" is empty: installing @shown_modules@ (no demo data)"
  @odoo@ --config @runtime_conf@ --init @modules@ --stop-after-init --no-http
fi
