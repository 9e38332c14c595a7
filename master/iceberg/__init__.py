"""The leader's Iceberg commits (issue 19): `service` runs one commit loop per Iceberg job while
this master leads, `committer` is one table's blocking round, `rounds` its pure decisions."""
