# Stand-in for nixpkgs' nixos/modules/profiles/qemu-guest.nix: it loads the virtio kernel
# modules (boot.initrd.*), which the stand-in options do not model; nothing our tests read.
{ }
