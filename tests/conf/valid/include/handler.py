# content_by_python_file for full.conf: the handler body, as in a block.
ngx.say(ngx.var.greeting)
