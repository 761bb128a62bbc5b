// placeholder: attention
