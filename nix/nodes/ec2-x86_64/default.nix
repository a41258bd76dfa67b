# EC2 on Intel/AMD (tested types: t3.medium, t3.2xlarge); `ec2-install up` picks it
# for x86_64 instance types.
{
  imports = [ ../ec2 ];
  nixpkgs.hostPlatform = "x86_64-linux";
  networking.hostName = "odoo-box";
  odbox.service-stack.odoo.workers = 3;
}
