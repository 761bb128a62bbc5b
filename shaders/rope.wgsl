// placeholder: rope
