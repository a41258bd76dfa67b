{
    "name": "odbox-deploy test addon (v3)",
    "version": "17.0.3.0.0",
    "summary": "tests/deploy: v2 plus a field and a record, then an update that raises",
    "depends": ["base"],
    "data": ["security/ir.model.access.csv", "data/records.xml", "data/fail.xml"],
    "license": "LGPL-3",
}
