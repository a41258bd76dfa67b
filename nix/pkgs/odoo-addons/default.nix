# Our Odoo addons, one folder each under addons/; the package's top folder is
# what the service stack puts on Odoo's addons_path.
{ lib, stdenvNoCC }:
stdenvNoCC.mkDerivation {
  pname = "odoo-addons";
  version = "1.0.0";
  src = lib.cleanSourceWith {
    src = ./addons;
    filter = path: type: baseNameOf path != "__pycache__" && !(lib.hasSuffix ".pyc" path);
  };
  dontConfigure = true;
  dontBuild = true;
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    cp -r . $out/
    runHook postInstall
  '';
  meta = {
    description = "Odoo Box's Odoo addons (odbox_health)";
    license = lib.licenses.lgpl3Only;
  };
}
