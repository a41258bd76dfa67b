# The six tools, built from the uv workspace and its lock by uv2nix: every
# dependency is the wheel uv.lock names, with the hash uv.lock records.
{ lib, pkgs, pyproject-nix, uv2nix, pyproject-build-systems, workspaceRoot }:
let
  workspace = uv2nix.lib.workspace.loadWorkspace { inherit workspaceRoot; };
  overlay = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };
  # uv.lock records no build systems: the two sdists of pgAdmin's dependencies
  # (no wheels on PyPI) build with setuptools. Only the dev shell's venv needs them.
  sdists = final: prev: lib.genAttrs [ "flask-principal" "jsonformatter" ] (name:
    prev.${name}.overrideAttrs (old: {
      nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ final.resolveBuildSystem { setuptools = [ ]; };
    }));
  python = pkgs.python312;
  pythonSet = (pkgs.callPackage pyproject-nix.build.packages { inherit python; }).overrideScope
    (lib.composeManyExtensions [ pyproject-build-systems.overlays.wheel overlay sdists ]);
  util = pkgs.callPackages pyproject-nix.build.util { };
  libcrypt = "${pkgs.libxcrypt}/lib/${
    if pkgs.stdenv.hostPlatform.isDarwin then "libcrypt.1.dylib" else "libcrypt.so.1"}";
  # One tool: its own venv (only its dependencies), reduced to its command, with the
  # completion scripts `TOOL completion SHELL` prints where bash-completion, zsh and fish
  # look for them (not when cross-compiling: the tool cannot run on the build machine).
  tool = name: wrapArgs:
    let
      app = util.mkApplication {
        venv = pythonSet.mkVirtualEnv "${name}-env" { ${name} = [ ]; };
        package = pythonSet.${name};
      };
      canRun = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
    in
    pkgs.symlinkJoin {
      inherit (app) name meta;
      paths = [ app ];
      nativeBuildInputs = [ pkgs.installShellFiles ] ++ lib.optional (wrapArgs != "") pkgs.makeWrapper;
      postBuild = lib.optionalString (wrapArgs != "") ''
        wrapProgram $out/bin/${name} ${wrapArgs}
      '' + lib.optionalString canRun ''
        installShellCompletion --cmd ${name} \
          --bash <($out/bin/${name} completion bash) \
          --zsh <($out/bin/${name} completion zsh) \
          --fish <($out/bin/${name} completion fish)
      '';
    };
in
{
  # crypt(3) hashes through libxcrypt, found by path (ctypes cannot search the Nix store).
  vaultgen = tool "vaultgen" "--set-default VAULTGEN_LIBCRYPT ${libcrypt}";
  dbinit = tool "dbinit" "";
  # pg_dump and pg_restore where the machine has none: nixpkgs' default PostgreSQL, as new as the servers it reads or newer (the box sets ODBOX_PG_BIN to its own server's).
  odbox-backup = tool "odbox-backup" "--suffix PATH : ${lib.makeBinPath [ pkgs.postgresql ]}";
  k8s-migrate = tool "k8s-migrate" "";
  ec2-install = tool "ec2-install" "";
  odbox-deploy = tool "odbox-deploy" "";
  # Everything of the workspace, dev and test dependencies included.
  venv = pythonSet.mkVirtualEnv "odoo-box-env" workspace.deps.all;
  # for the dev shell, where the tests run vaultgen from uv's environment
  inherit libcrypt pythonSet;
}
