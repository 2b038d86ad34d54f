# The processed lake as an Athena-queryable catalogue: one Glue table per Parquet prefix
# (fact_*, dim_date, etl_src_*), columns generated from src/totesys_etl/schema into
# glue_tables.tf.json (tf/scripts/generate_glue_tables.py), with the partition keys every table
# shares. The keys are run_year/run_month/run_day (dim_date has data columns year, month and
# day, and Athena refuses a table whose partition key repeats a column); partition projection
# maps them onto the lake's year=/month=/day= levels, so no crawler or MSCK REPAIR is needed.
locals {
  glue_partition_projection = merge([
    for key in local.glue_partition_keys : {
      "projection.${key.name}.type"   = "integer"
      "projection.${key.name}.range"  = "${key.first},${key.last}"
      "projection.${key.name}.digits" = tostring(key.digits)
    }
  ]...)
  glue_partition_path = join("/", [for key in local.glue_partition_keys : "${key.path}=$${${key.name}}"])
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

  parameters = merge(local.glue_partition_projection, {
    EXTERNAL                    = "TRUE"
    classification              = "parquet"
    "projection.enabled"        = "true"
    "storage.location.template" = "s3://${aws_s3_bucket.lake["processed"].id}/${each.key}/${local.glue_partition_path}"
  })

  dynamic "partition_keys" {
    for_each = local.glue_partition_keys
    content {
      name    = partition_keys.value.name
      type    = "int"
      comment = "the run's ${partition_keys.value.path} (S3 level ${partition_keys.value.path}=)"
    }
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
