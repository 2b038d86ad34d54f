# The processed lake as an Athena-queryable catalogue: one Glue table per Parquet prefix
# (fact_*, dim_date, etl_src_*), columns generated from src/totesys_etl/schema into
# glue_tables.tf.json (tf/scripts/generate_glue_tables.py). Partitions follow the lake's
# year=/month=/day= keys through partition projection, so no crawler or MSCK REPAIR is needed.
locals {
  lake_first_year = 2020
  lake_last_year  = 2099
}

resource "aws_glue_catalog_database" "lake" {
  name        = local.glue_database
  description = "${local.prefix}: the processed lake (Parquet) for Athena"
}

resource "aws_glue_catalog_table" "lake" {
  for_each = local.glue_tables

  name          = each.key
  database_name = aws_glue_catalog_database.lake.name
  description   = each.value.description
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                    = "TRUE"
    classification              = "parquet"
    "projection.enabled"        = "true"
    "projection.year.type"      = "integer"
    "projection.year.range"     = "${local.lake_first_year},${local.lake_last_year}"
    "projection.month.type"     = "integer"
    "projection.month.range"    = "1,12"
    "projection.month.digits"   = "2"
    "projection.day.type"       = "integer"
    "projection.day.range"      = "1,31"
    "projection.day.digits"     = "2"
    "storage.location.template" = "s3://${aws_s3_bucket.lake["processed"].id}/${each.key}/year=$${year}/month=$${month}/day=$${day}"
  }

  partition_keys {
    name = "year"
    type = "int"
  }
  partition_keys {
    name = "month"
    type = "int"
  }
  partition_keys {
    name = "day"
    type = "int"
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.lake["processed"].id}/${each.key}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = each.value.columns
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment != "" ? columns.value.comment : null
      }
    }
  }
}
