# Openly insecure test secrets for the dev VM, made by vaultgen at build time:
# the cleartext of a whole vault (passwords, their hashes, the CA, a localhost
# certificate, an SSH identity), world-readable in the Nix store. The vault
# module's snakeoil backend copies them to where the decrypted secrets go.
# Never use on a machine that matters: anything in the store is readable by every user.
{ runCommand, vaultgen }:
runCommand "snakeoil-sec" { nativeBuildInputs = [ vaultgen ]; } ''
  export HOME=$TMPDIR
  vaultgen --vault vault generate --batch
  cd vault
  # Each secret under the name the vault module asks for, without .age.
  find . -name '*.age' | sort | while read -r file; do
    clear="$out/''${file%.age}"
    mkdir -p "$(dirname "$clear")"
    vaultgen decrypt --identity age.key --out "$clear" --mode 0444 "$file"
  done
  # and what is public or needed in the clear: the SSH public key, the vault's own identity
  install -m 0444 manifest.json age.key -t "$out"
  install -m 0444 ssh/id_ed25519.pub -t "$out/ssh"
  echo "INSECURE: published test secrets for the Odoo Box dev VM, never for a real machine" > $out/README
''
