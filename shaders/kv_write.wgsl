// placeholder: kv_write
