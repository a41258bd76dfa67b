{
    "name": "odbox-deploy test addon (v2)",
    "version": "17.0.2.0.0",
    "summary": "tests/deploy: v1 plus a field (colour) and a record",
    "depends": ["base"],
    "data": ["security/ir.model.access.csv", "data/records.xml"],
    "license": "LGPL-3",
}
