# odoo.conf and the odoo unit's commands, as a function of the configuration that uses only
# builtins: module.nix imports it, and tests/box evaluates it with bare nix-instantiate (no
# nixpkgs) so the test harness runs exactly what the box runs. The start scripts are
# odoo-configure.sh and odoo-initialize.sh beside this file, with @name@ filled in here.
{
  db,
  httpPort,
  geventPort,
  workers,
  maxCronThreads,
  addons, # paths (or packages) whose top folder holds addons, after Odoo's own
  settings ? { }, # more [options]; they override these
  initialModules,
  socket, # PostgreSQL's socket folder
  dataDir,
  runtimeConf, # where odoo-configure writes the file Odoo reads
  adminPasswordFile,
  secretFiles ? { }, # odoo.conf options whose value odoo-configure reads from a file at start
  psql,
  odoo, # the odoo executable
}:
let
  # nixpkgs' lib.escapeShellArg and lib.escapeRegex, in builtins.
  shellArg = arg:
    let s = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then s
    else "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  regexChars = [ "\\" "[" "{" "(" ")" "^" "$" "?" "*" "+" "|" "." ];
  escapeRegex = builtins.replaceStrings regexChars (map (c: "\\${c}") regexChars);
  ini = v: if v == true then "True" else if v == false then "False" else toString v;
  options = {
    db_host = socket; # a socket directory: libpq connects over the Unix socket, peer auth
    db_user = "odoo";
    db_password = false;
    db_name = db;
    dbfilter = "^${escapeRegex db}$";
    list_db = false;
    proxy_mode = true;
    http_interface = "127.0.0.1";
    http_port = httpPort;
    gevent_port = geventPort;
    workers = workers;
    max_cron_threads = maxCronThreads;
    data_dir = dataDir;
    addons_path = builtins.concatStringsSep "," (map toString addons);
    # odbox_health server-wide: /odbox/health answers (503, "no database selected") when Odoo
    # has no database, and on a restored database that never installed it.
    server_wide_modules = "base,web,odbox_health";
    unaccent = true; # dbinit creates the extension
    without_demo = "all";
    logfile = false; # stderr, so the journal
  } // settings;
  # One option's value from its (decrypted vault) file, appended to the runtime file.
  readSecret = key: ''
    if ! value=$(head -n 1 ${shellArg secretFiles.${key}}); then
      echo "odoo: cannot read ${key} from ${secretFiles.${key}}: was the vault decrypted?" >&2
      exit 1
    fi
    printf '%s = %s\n' ${shellArg key} "$value" >> "$runtime.tmp"
  '';
  fill = file: values:
    builtins.replaceStrings (map (k: "@${k}@") (builtins.attrNames values))
      (builtins.attrValues values) (builtins.readFile file);
in
{
  inherit options;
  # odoo.conf without admin_passwd: odoo-configure adds that line at each start.
  conf = "[options]\n"
    + builtins.concatStringsSep "" (map (k: "${k} = ${ini options.${k}}\n") (builtins.attrNames options));
  # The script that writes runtimeConf from `confFile` (the store path of `conf`) and the secret.
  configure = confFile: fill ./odoo-configure.sh {
    secret = shellArg adminPasswordFile;
    conf = shellArg confFile;
    runtime_conf = shellArg runtimeConf;
    read_secrets = builtins.concatStringsSep "" (map readSecret (builtins.attrNames secretFiles));
  };
  # A new box has an empty database (dbinit made it): install initialModules once, as
  # `odoo -i base` would; a database restored from a backup is left alone.
  initialize = fill ./odoo-initialize.sh {
    psql = shellArg psql;
    socket = shellArg socket;
    db = shellArg db;
    modules = shellArg (builtins.concatStringsSep "," initialModules);
    shown_modules = builtins.concatStringsSep "," initialModules;
    odoo = shellArg odoo;
    runtime_conf = shellArg runtimeConf;
  };
  start = "${odoo} --config ${runtimeConf}";
}
