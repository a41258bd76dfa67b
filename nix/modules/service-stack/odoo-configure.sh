# odoo-configure: odoo.conf plus admin_passwd from the vault, into a file only odoo can read.
set -euo pipefail
umask 077
secret=@secret@
if [ ! -r "$secret" ]; then
  echo "odoo: cannot read the admin password $secret: was the vault decrypted (odbox-vault in the activation log)?" >&2
  exit 1
fi
password=$(head -n 1 "$secret")
if [ -z "$password" ]; then
  echo "odoo: the admin password in $secret is empty" >&2
  exit 1
fi
runtime=@runtime_conf@
{ cat @conf@; printf 'admin_passwd = %s\n' "$password"; } > "$runtime.tmp"
@read_secrets@mv -f "$runtime.tmp" "$runtime"
