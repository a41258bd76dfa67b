{
  description = "Odoo Box: a company's Odoo on one NixOS machine, and the tools that look after it";

  # No flake.lock is committed yet: it pins each input by its NAR hash, which only
  # a machine that can fetch the inputs can compute (ours cannot reach GitHub).
  # The first `nix flake lock` writes it; commit it then.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, pyproject-nix, uv2nix, pyproject-build-systems }:
    let
      inherit (nixpkgs) lib;
      linux = [ "x86_64-linux" "aarch64-linux" ];
      # No x86_64-darwin: cryptography (vaultgen, ec2-install; 50.0.2 in uv.lock) publishes
      # no macOS x86_64 wheel, and building it from source needs Rust and maturin overrides we
      # do not keep (tests/nix/test_uv2nix.py checks a wheel for every system listed here).
      # An Intel Mac runs the tools in the dev shell of a Linux VM, or from uv (`just setup`).
      darwin = [ "aarch64-darwin" ];
      overlay = import ./nix/pkgs {
        inherit pyproject-nix uv2nix pyproject-build-systems;
        workspaceRoot = ./.;
      };
      pkgsFor = system: import nixpkgs { inherit system; overlays = [ overlay ]; };
      forSystems = systems: f: lib.genAttrs systems (system: f (pkgsFor system));
      # dbinit and odbox-deploy run on the box; the others also on a sysadmin's Mac.
      tools = pkgs:
        [ "vaultgen" "odbox-backup" "k8s-migrate" "ec2-install" ]
        ++ lib.optionals pkgs.stdenv.hostPlatform.isLinux [ "dbinit" "odbox-deploy" ];

      node = dir: extra: lib.nixosSystem {
        modules = [
          self.nixosModules.default
          { nixpkgs.overlays = [ overlay ]; }
          ./nix/nodes/${dir}
        ] ++ extra;
      };
      # The -boot variants: the whole stack but Odoo, to load the data first.
      withBoot = name: dir: {
        ${name} = node dir [ ];
        "${name}-boot" = node dir [ { odbox.service-stack.bootstrap-mode = true; } ];
      };
    in
    {
      overlays.default = overlay;
      nixosModules.default = ./nix/modules;

      packages = forSystems (linux ++ darwin) (pkgs:
        lib.genAttrs (tools pkgs) (name: pkgs.${name}) // {
          admin-tools = pkgs.odbox-admin-tools;
          dev-tools = pkgs.odbox-dev-tools;
          # The dev VM's own snakeoil secrets (aarch64-linux, as the guest): vaultgen makes
          # new ones in each build, so the SSH identity that logs in is only the guest's.
          snakeoil-sec = self.nixosConfigurations.devm.pkgs.snakeoil-sec;
          # The dev VM, its runner built for this machine (virtualisation.host.pkgs): on a
          # Mac, QEMU and the start script are Darwin's while the guest stays aarch64-linux,
          # which needs a Linux builder (nix/nodes/devm-aarch64/README.md).
          devm-vm = (self.nixosConfigurations.devm.extendModules {
            modules = [ { virtualisation.vmVariant.virtualisation.host.pkgs = pkgs; } ];
          }).config.system.build.vm;
        } // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          inherit (pkgs) odoo-addons;
        });

      apps = forSystems (linux ++ darwin) (pkgs:
        lib.genAttrs (tools pkgs) (name: {
          type = "app";
          program = "${pkgs.${name}}/bin/${name}";
          meta.description = "Odoo Box's ${name}";
        }));

      # `nix develop -c just test`: the tools, and everything the tests run. The
      # tests' Python environment is uv's, from uv.lock (`just setup`), with
      # nixpkgs' Python and no interpreter download.
      devShells = forSystems (linux ++ darwin) (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            python312 uv just git perl
            age openssl openssh libxcrypt
            postgresql zstd restic shellcheck nix
          ] ++ lib.optionals stdenv.hostPlatform.isLinux [ util-linux e2fsprogs shadow ]
            ++ map (name: pkgs.${name}) (tools pkgs);
          env = {
            UV_PYTHON = pkgs.python312.interpreter;
            UV_PYTHON_DOWNLOADS = "never";
            VAULTGEN_LIBCRYPT = pkgs.odbox-libcrypt;
          };
          # PyPI's manylinux wheels (psycopg-binary, cryptography, …) expect libstdc++ and zlib
          # where a FHS system keeps them.
          shellHook = lib.optionalString pkgs.stdenv.hostPlatform.isLinux ''
            export LD_LIBRARY_PATH=${lib.makeLibraryPath [ pkgs.stdenv.cc.cc.lib pkgs.zlib ]}''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
          '';
        };
      });

      nixosConfigurations =
        withBoot "devm" "devm-aarch64"
        // withBoot "ec2-aarch64" "ec2-aarch64"
        // withBoot "ec2-x86_64" "ec2-x86_64";

      checks = forSystems linux (pkgs: {
        stack = import ./nix/checks/stack.nix { inherit pkgs; module = self.nixosModules.default; };
      } // lib.genAttrs (tools pkgs) (name: pkgs.${name}) // {
        inherit (pkgs) odoo-addons snakeoil-sec;
      });
    };
}
