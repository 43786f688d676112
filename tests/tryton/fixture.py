#!/usr/bin/env python3
"""Master data for the template database, over raw JSON-RPC (idempotent).

Creates: EUR, the countries the simulators use, the company "Ordersync Test
BV" (made the admin's current company), manual invoicing (so no chart of
accounts is needed), the company's sale taxes (NL 21%, 9% and 0% "verkoop",
on one balance account; plus a 21% purchase tax that a sale must never
get), an accounting category per sale rate carrying that customer tax,
every product of the sandbox catalogue (products.json, kept equal to
src/sandbox/catalog.rs by a Rust test) with its SKU as code, its EAN as
identifier and the category of its rate (what a line without a rate
gets), and 100000 of each in stock so shipments can be assigned. Usage: fixture.py URL DB LOGIN PASSWORD"""
import json
import os
import sys
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trpc import Client  # noqa: E402

COUNTRIES = [('NL', 'NLD', 'Netherlands'), ('BE', 'BEL', 'Belgium'),
    ('DE', 'DEU', 'Germany'), ('FR', 'FRA', 'France'),
    ('LU', 'LUX', 'Luxembourg'), ('GB', 'GBR', 'United Kingdom'),
    ('AT', 'AUT', 'Austria')]


def one(c, model, domain, ctx):
    ids = c.call(f'model.{model}.search', domain, 0, 1, None, ctx)
    return ids[0] if ids else None


def main():
    url, db, login, password = sys.argv[1:5]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, 'products.json'), encoding='utf-8') as f:
        catalogue = json.load(f)
    c = Client(url, db)
    c.login(login, password)
    ctx = {}
    cur = one(c, 'currency.currency', [('code', '=', 'EUR')], ctx)
    if not cur:
        cur, = c.call('model.currency.currency.create', [{
                    'name': 'Euro', 'code': 'EUR', 'symbol': '€',
                    'digits': 2, 'rounding': Decimal('0.01')}], ctx)
    for code, code3, name in COUNTRIES:
        if not one(c, 'country.country', [('code', '=', code)], ctx):
            c.call('model.country.country.create', [{
                        'name': name, 'code': code, 'code3': code3}], ctx)
    company = one(c, 'company.company',
        [('party.name', '=', 'Ordersync Test BV')], ctx)
    if not company:
        party, = c.call('model.party.party.create', [{
                    'name': 'Ordersync Test BV'}], ctx)
        company, = c.call('model.company.company.create', [{
                    'party': party, 'currency': cur,
                    'timezone': 'Europe/Amsterdam'}], ctx)
    # Without membership company-scoped records are invisible to the user.
    c.call('model.res.user.write', [c.user_id], {
            'companies': [['add', [company]]], 'company': company}, ctx)
    ctx = {'company': company}
    c.call('model.sale.configuration.write', [1], {
            'sale_invoice_method': 'manual'}, ctx)

    # Taxes need an account of a balance type; a full chart is not needed.
    vat_type = one(c, 'account.account.type', [('name', '=', 'VAT')], ctx)
    if not vat_type:
        vat_type, = c.call('model.account.account.type.create', [{
                    'name': 'VAT', 'company': company,
                    'statement': 'balance'}], ctx)
    vat_account = one(c, 'account.account', [('code', '=', '1500')], ctx)
    if not vat_account:
        vat_account, = c.call('model.account.account.create', [{
                    'name': 'VAT payable', 'code': '1500',
                    'company': company, 'type': vat_type}], ctx)
    purchase = one(c, 'account.tax.group', [('code', '=', 'PURCHASE')], ctx)
    if not purchase:
        purchase, = c.call('model.account.tax.group.create', [{
                    'name': 'Purchase', 'code': 'PURCHASE',
                    'kind': 'purchase'}], ctx)
    for name, rate, group in [('NL 21% inkoop', '0.21', purchase),
            ('NL 21% verkoop', '0.21', None), ('NL 9% verkoop', '0.09', None),
            ('NL 0% verkoop', '0', None)]:
        if not one(c, 'account.tax', [('name', '=', name)], ctx):
            c.call('model.account.tax.create', [{
                        'name': name, 'description': name,
                        'type': 'percentage', 'rate': Decimal(rate),
                        'group': group, 'company': company,
                        'invoice_account': vat_account,
                        'credit_note_account': vat_account}], ctx)

    # A product's default customer taxes come from its accounting category.
    categories = {}
    for rate in sorted({p['tax_rate'] for p in catalogue}):
        name = f'Goods {rate}%'
        cat = one(c, 'product.category', [('name', '=', name)], ctx)
        if not cat:
            tax = one(c, 'account.tax', [('name', '=', f'NL {rate}% verkoop')], ctx)
            cat, = c.call('model.product.category.create', [{
                        'name': name, 'accounting': True,
                        'customer_taxes': [['add', [tax]]]}], ctx)
        categories[rate] = cat

    unit = one(c, 'product.uom', [('name', '=', 'Unit')], ctx)
    kg = one(c, 'product.uom', [('name', '=', 'Kilogram')], ctx)
    # Weighed goods are sold in grams precision ("0.530 kg").
    c.call('model.product.uom.write', [kg], {
            'rounding': 0.001, 'digits': 3}, ctx)
    uoms = {'piece': unit, 'box': unit, 'kilogram': kg}
    products = []
    for p in catalogue:
        pid = one(c, 'product.product', [('code', '=', p['sku'])], ctx)
        if not pid:
            uom = uoms[p['unit']]
            tmpl, = c.call('model.product.template.create', [{
                        'name': p['name'], 'type': 'goods',
                        'salable': True, 'default_uom': uom,
                        'sale_uom': uom, 'list_price': Decimal(p['price']),
                        'account_category': categories[p['tax_rate']],
                        # product.product.code is read-only: prefix + suffix
                        'products': [['create', [{
                                        'suffix_code': p['sku'],
                                        'identifiers': [['create', [{
                                                        'type': 'ean',
                                                        'code': p['ean']}]]],
                                        }]]],
                        }], ctx)
            pid = one(c, 'product.product', [('template', '=', tmpl)], ctx)
        products.append(pid)
    storage = one(c, 'stock.location', [('code', '=', 'STO')], ctx)
    if not one(c, 'stock.inventory',
            [('location', '=', storage), ('state', '=', 'done')], ctx):
        inv, = c.call('model.stock.inventory.create', [{
                    'location': storage, 'company': company,
                    'lines': [['create', [
                                {'product': pid, 'quantity': 100000.0}
                                for pid in products]]]}], ctx)
        c.call('model.stock.inventory.confirm', [inv], ctx)
    print(json.dumps({'company': company, 'products': len(products)}))


if __name__ == '__main__':
    main()
