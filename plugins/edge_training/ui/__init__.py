"""The Edge training page in the Airflow UI: one row per partition day, a metric chart, a backfill form."""
