"""NAS baselines that pick one static level subset: DARTS, GDAS, regularized evolution, random
search and the exhaustive 16-subset oracle (DESIGN §7). ``rlpkd.search.methods.run_search(name, context)`` runs one."""
