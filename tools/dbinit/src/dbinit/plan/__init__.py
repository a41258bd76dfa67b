"""dbinit setup's planners, one per kind of object: each reads the catalog and returns
the changes (words and statements) that close the gap; `dbinit.provision` runs them."""
