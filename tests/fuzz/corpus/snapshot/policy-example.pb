Dexample policy: smarthost for partners, shaped bulk to big providers €âÏªR;
partner.example[mx1.partner.example]:2525[192.0.2.25]R=
.internal.example[gw.internal.example][2001:db8::25]:25R*
lists.example.orgrelay.example.net:587ZE
example.org[backup-mx.example.net][backup-mx2.example.net]:2525b[fallback.example.net]:2525j
*¬Àp €¯(Àpj

.gmail.com< €Æ
¢	0.0.0.0/0< Ø¢2001:db8::/32< ¬(¸¢!newsletter@example.com( œ¢.example.com€£  ª&

.gmail.comd °	(<2rate limited8Øª
*2²S
transactionalmta1.example.com

192.0.2.10

192.0.2.11
2001:db8::10²(
bulkbulk.example.com

192.0.2.20º.example.comtransactionalº newsletter@example.combulkºacmebulkÂ
.partner.exampleÂ

.gmail.comÂ
*