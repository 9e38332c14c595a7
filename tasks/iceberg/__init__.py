"""The Iceberg table sink: the job spec, the catalogs an operator offers, the contract between
the tasks that write data files and the leader that commits them (layout, chain), and the
create-only store of a table's location. pyiceberg is imported only where a table is opened."""
