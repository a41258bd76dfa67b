# Just enough of nixpkgs' `lib` to evaluate our interface.nix files with a bare
# `nix-instantiate` (Debian's nix-bin, no nixpkgs): mkOption keeps what it is
# given, and each type is a record naming itself, so a test can read every
# option's type, default and description as JSON.
let
  type = name: { _type = "option-type"; inherit name; };
  of = name: inner: type "${name} of ${inner.name}" // { inner = inner; };
  options = module:
    let
      m = if builtins.isFunction module then module { inherit lib; name = "‹name›"; config = { }; } else module;
    in
    m.options or { };
  lib = {
    # A default computed from other options (config is empty here) shows as its
    # defaultText, as nixpkgs' option docs show it.
    mkOption = attrs: attrs // { _type = "option"; }
      // (if attrs ? defaultText then { default = attrs.defaultText; } else { });
    mkEnableOption = what: {
      _type = "option";
      type = type "bool";
      default = false;
      description = "Whether to enable ${what}.";
    };
    mkPackageOption = pkgs: name: extra: {
      _type = "option";
      type = type "package";
      default = { _type = "literalExpression"; text = "pkgs.${name}"; };
      description = "The ${name} package to use.";
    } // extra;
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mdDoc = text: text;
    types = {
      bool = type "bool";
      str = type "str";
      nonEmptyStr = type "nonEmptyStr";
      lines = type "lines";
      int = type "int";
      port = type "port";
      path = type "path";
      package = type "package";
      attrs = type "attrs";
      anything = type "anything";
      ints = {
        positive = type "positive int";
        unsigned = type "unsigned int";
        between = lo: hi: type "int between ${toString lo} and ${toString hi}";
      };
      listOf = of "list";
      attrsOf = of "attrs";
      nullOr = of "null or";
      enum = values: type "one of ${builtins.concatStringsSep ", " (map toString values)}";
      strMatching = pattern: type "string matching ${pattern}";
      either = a: b: type "${a.name} or ${b.name}";
      oneOf = ts: type (builtins.concatStringsSep " or " (map (t: t.name) ts));
      submodule = module: type "submodule" // { options = options module; };
    };
  };
in
lib
