import sys

import hmq

tag = hmq.Tag.from_queue(sys.argv[1]) # use your tag
tag.to_file("filename.db", stay_linked=True) # assigns a place to store the data
tag.pull() # downloads the results
