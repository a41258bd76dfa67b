# EC2 Graviton (tested types: m6g.xlarge, c6g.2xlarge, t4g.2xlarge); `ec2-install up`
# picks it for arm64 instance types.
{
  imports = [ ../ec2 ];
  nixpkgs.hostPlatform = "aarch64-linux";
  networking.hostName = "odoo-box";
  odbox.service-stack.odoo.workers = 5;
}
