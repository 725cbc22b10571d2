"""Real Schwab streamer frames, copied from the fact sheet (public captures and Schwab's
Streamer Guide), for the parser tests."""

LOGIN_OK = (
    '{"response":[{"service":"ADMIN","command":"LOGIN","requestid":"1",'
    '"SchwabClientCorrelId":"60b4c643-ca26-d965-1d21-ad96078ab2fa","timestamp":1755118704102,'
    '"content":{"code":0,"msg":"server=s3081dc7-2;status=NP"}}]}'
)
HEARTBEAT = '{"notify":[{"heartbeat":"1755118704127"}]}'
SUBS_OK = (
    '{"response":[{"service":"LEVELONE_EQUITIES","command":"SUBS","requestid":"3",'
    '"SchwabClientCorrelId":"60b4c643-ca26-d965-1d21-ad96078ab2fa","timestamp":1755118704127,'
    '"content":{"code":0,"msg":"SUBS command succeeded"}}]}'
)
LOGIN_DENIED = (
    '{"response":[{"service":"ADMIN","command":"LOGIN","requestid":"1",'
    '"SchwabClientCorrelId":"5be0b7e7-5b8b-4fd3-9bed-7f49106cfe96","timestamp":1669828982588,'
    '"content":{"code":3,"msg":"Login Denied.: token is invalid or has expired."}}]}'
)
STOP_STREAMING = (
    '{"notify":[{"service":"ADMIN","timestamp":1669828982588,'
    '"content":{"code":30,"msg":"Stop streaming due to empty subscription"}}]}'
)

# Aug 2025 capture, fields 0,1,2,3,4,5,8,10: a full first message, then a delta
AAPL_FIRST = (
    '{"data":[{"service":"LEVELONE_EQUITIES", "timestamp":1755118704147,"command":"SUBS",'
    '"content":[{"key":"AAPL","delayed":false,"assetMainType":"EQUITY","assetSubType":"COE",'
    '"cusip":"037833100","1":233.22,"2":233.33,"3":233.3,"4":1,"5":3,"8":69783235,"10":235}]}]}'
)
AAPL_DELTA = (
    '{"data":[{"service":"LEVELONE_EQUITIES", "timestamp":1755118712559,"command":"SUBS",'
    '"content":[{"key":"AAPL","1":233.33,"2":233.39,"3":233.34,"5":1,"8":69784498}]}]}'
)

# May 2024, schwab-py streaming_test: every field, pre-market, delayed
MSFT_FULL = """{"data":[{"service":"LEVELONE_EQUITIES","timestamp":1715777956144,"command":"SUBS",
"content":[{"key":"MSFT","delayed":true,"assetMainType":"EQUITY","assetSubType":"COE",
"cusip":"594918104","1":417.01,"2":417.08,"3":417.09,"4":1,"5":0,"6":"Z","7":"Z","8":162750,
"9":10,"10":0,"11":0,"12":415.81,"13":"Q","14":false,"15":"Microsoft Corp","16":"Q","17":0,
"18":1.28,"19":430.82,"20":307.59,"21":36.09605,"22":3,"23":0.72513,"24":0,"25":"NASDAQ",
"26":"2024-05-15 00:00:00.0","27":false,"28":false,"29":415.81,"30":408,"31":0,
"32":"Unknown","33":417.01,"34":1715777955574,"35":1715777953982,"36":1715716801392,
"37":1715777955574,"38":1715777955574,"39":"BATS","40":"BATS","41":"XBOS","42":0.3078329,
"43":0,"44":1.2,"45":0.28859335,"46":95711793,"47":0,"48":0,"49":1,"50":1.28,
"51":0.3078329}]}]}"""

GOOG_OPTION = """{"data":[{"service":"LEVELONE_OPTIONS","timestamp":1715787814441,"command":"SUBS",
"content":[{"key":"GOOG  240517C00070000","delayed":true,"assetMainType":"OPTION","cusip":"",
"1":"GOOG 05/17/2024 70.00 C","2":102.15,"3":103.75,"4":103.07,"5":0,"6":0,"7":101.9504,
"8":0,"9":5,"10":354.99208367,"11":102.9299,"12":2024,"13":100,"14":2,"15":0,"16":20,"17":20,
"18":1,"19":1.1196,"20":70,"21":"C","22":"GOOG","23":5,"24":"100 GOOG","25":0.14009969,
"26":17,"27":2,"28":0.99961827,"29":2.799e-05,"30":-0.01339331,"31":0.00018508,
"32":0.00434917,"33":"Normal","34":103.02414938,"35":172.9299,"36":"S","37":102.95,
"38":1715786878997,"39":1714140219464,"40":"O","41":"OPR","42":1715990400000,"43":"P",
"44":1.09818108,"45":0.9996,"46":0.98047678,"47":0,"48":true,"49":"GOOG","50":103.07,
"51":68.45,"52":0,"53":0,"54":0,"55":"A"}]}]}"""

# Dec 2025, real time, a subset of fields
SPXW_OPTION = """{"data":[{"service":"LEVELONE_OPTIONS","timestamp":1765082498588,"command":"SUBS",
"content":[{"1":"SPXW 12/08/2025 6880.00 C","2":10.2,"3":10.6,"4":10.6,"5":28.9,"6":6.9,
"7":9.15,"8":7961,"key":"SPXW  251208C06880000","delayed":false,"assetMainType":"OPTION"}]}]}"""

CL_FUTURE = """{"data":[{"service":"LEVELONE_FUTURES","timestamp":1719002950099,"command":"SUBS",
"content":[{"key":"/CL","delayed":false,"assetMainType":"FUTURE","1":80.61,"2":80.62,
"3":80.6,"4":2,"5":14,"6":"?","7":"?","8":270916,"9":1,"10":1719002948817,
"11":1719002944037,"12":81.79,"13":80.35,"14":81.29,"15":"@",
"16":"Light Sweet Crude Oil Futures,Aug-2024,ETH","17":"?","18":81.27,"19":-0.69,
"20":-0.84881289,"21":"XNYM","22":"Normal","23":352314,"24":80.61,"25":0.01,"26":10,
"27":"/CL","28":"D,D","29":"GLBX(de=1640;0=-17001600;1=-17001600d-15551640;7=d-16401555)",
"30":false,"31":1000,"32":true,"33":81.29,"34":"/CLQ24","35":1721620800000,"36":"Unknown",
"37":1719002948347,"38":1719002948817,"39":true,"40":1718928000000}]}]}"""

ES_FUTURE_OPTION = """{"data":[{"service":"LEVELONE_FUTURES_OPTIONS","timestamp":1718814961845,
"command":"SUBS","content":[{"key":"./E3DM24P5490","delayed":false,
"assetMainType":"FUTURE_OPTION","1":9.6,"2":9.7,"3":9.7,"4":19,"5":19,"6":63,"7":63,"8":959,
"9":22,"10":1718814960408,"11":1718814929433,"12":11,"13":7.8,"14":11,"15":63,
"16":"E-mini S&P 500 Options","17":10,"18":524,"19":9.65,"20":0.05,"21":2.5,"22":50,"23":11,
"24":"/ESM24","25":5490,"26":1718856000000,"27":"Weeklys","28":"P","29":"Normal","30":"@",
"31":"XCME"}]}]}"""

# Dec 2025, trimmed to two levels per side
NYSE_BOOK = """{"data":[{"service":"NYSE_BOOK","timestamp":1765306323315,"command":"SUBS",
"content":[{"1":1765306322349,
"2":[{"0":13.12,"1":31600,"2":9,"3":[{"0":"NYSE","1":8800,"2":49786299},
{"0":"IEXG","1":7900,"2":49904606},{"0":"ARCX","1":4200,"2":49904606}]},
{"0":13.11,"1":900,"2":2,"3":[{"0":"MIAX","1":800,"2":49902308},
{"0":"EDGA","1":100,"2":49902308}]}],
"3":[{"0":13.13,"1":76300,"2":14,"3":[{"0":"NYSE","1":34100,"2":49786298},
{"0":"IEXG","1":13400,"2":49786299},{"0":"NSDQ","1":8000,"2":49786299}]},
{"0":13.26,"1":27600,"2":1,"3":[{"0":"PHLX","1":27600,"2":49904602}]}],
"key":"F"}]}]}"""

CHART_EQUITY = """{"data":[{"service":"CHART_EQUITY","timestamp":1765307221991,"command":"SUBS",
"content":[{"1":425,"2":221.133,"3":221.18,"4":221.02,"5":221.02,"6":11730,
"7":1765307100000,"8":20431,"seq":202,"key":"AMD"}]}]}"""

CHART_FUTURES = """{"data":[{"service":"CHART_FUTURES","timestamp":1765307265036,"command":"SUBS",
"content":[{"1":1765307160000,"2":6858.25,"3":6858.75,"4":6857.75,"5":6858.5,"6":897,
"seq":2224,"key":"/ES"}]}]}"""
