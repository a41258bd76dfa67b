{
    "name": "odbox-deploy test addon (v1)",
    "version": "17.0.1.0.0",
    "summary": "tests/deploy: one model and one record",
    "depends": ["base"],
    "data": ["security/ir.model.access.csv", "data/records.xml"],
    "license": "LGPL-3",
}
